"""The repository's Markdown pages (both READMEs, requirements/, aws-policy/, the glossary...) link only
to files that exist: a page renamed or never added shows up here, not as a 404 on GitHub."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP = {".venv", "build", "node_modules", ".git"}
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<img[^>]*\ssrc=\"([^\"]+)\"")


def pages() -> list[Path]:
    return sorted(p for p in REPO.rglob("*.md") if not SKIP & set(p.relative_to(REPO).parts))


def relative_links(page: Path) -> list[str]:
    found = []
    for match in LINK.finditer(page.read_text(encoding="utf-8")):
        target = match.group(1) or match.group(2)
        if not re.match(r"^([a-z]+:|#)", target):
            found.append(target.split("#", 1)[0])
    return found


def test_both_readmes_link_each_other():
    assert "](README.es.md)" in (REPO / "README.md").read_text(encoding="utf-8")
    assert "](README.md)" in (REPO / "README.es.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_at_files_that_exist(page):
    missing = [t for t in relative_links(page) if not (page.parent / t).exists()]
    assert missing == [], f"{page.relative_to(REPO)} links to files that do not exist: {missing}"


def test_the_link_finder_sees_markdown_and_html_links(tmp_path):
    page = tmp_path / "p.md"
    page.write_text('[a](x.md) [b](https://e.x) [c](#top) ![d](img/y.png "t") <img src="z.png"> [e](w.md#s)')
    assert relative_links(page) == ["x.md", "img/y.png", "z.png", "w.md"]
