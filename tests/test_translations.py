"""The Spanish edition is complete and in step with the English notebooks (fast: no kernel, no Spark).

`make translations` brings notebooks/locale/es/*.po up to date with the English notebooks and regenerates
notebooks/es; this test fails on a fuzzy or untranslated entry and on a generated notebook that is out of date."""

from __future__ import annotations

import io
import re
import shutil
import tokenize
from pathlib import Path

import nbformat
import polib
import pytest

from kinesis_lab.course import translations as tr

REPO = Path(__file__).resolve().parents[1]
ENGLISH = tr.english_notebooks(REPO)


def test_every_entry_is_translated_and_every_edition_is_up_to_date():
    assert len(ENGLISH) == 11
    assert tr.problems(REPO) == [], "run `make translations` and translate the entries it reports"


def _code_without_comments(source: str) -> list[tuple[int, str]]:
    return [(t.type, t.string) for t in tokenize.generate_tokens(io.StringIO(source).readline)
            if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE)]


@pytest.mark.parametrize("english", ENGLISH, ids=lambda p: p.stem)
def test_the_spanish_notebook_has_the_same_cells_code_and_outputs(english):
    en = nbformat.read(english, as_version=4)
    es = nbformat.read(REPO / "notebooks" / "es" / english.name, as_version=4)
    assert [(c.id, c.cell_type) for c in es.cells] == [(c.id, c.cell_type) for c in en.cells]
    for a, b in zip(en.cells, es.cells, strict=True):
        assert a.metadata == b.metadata
        if a.cell_type == "code":
            assert _code_without_comments(a.source) == _code_without_comments(b.source), a.id
            assert a.outputs == b.outputs  # the English run's stored outputs
            assert "# NBVAL_CHECK_OUTPUT" not in a.source or "# NBVAL_CHECK_OUTPUT" in b.source
        elif a.cell_type == "markdown" and a.source.strip():
            assert a.source != b.source, f"{english.name} cell {a.id} is not translated"


@pytest.mark.parametrize("english", ENGLISH, ids=lambda p: p.stem)
def test_links_and_images_of_the_spanish_notebooks_resolve(english):
    es_path = REPO / "notebooks" / "es" / english.name
    es = nbformat.read(es_path, as_version=4)
    targets = [t for c in es.cells if c.cell_type == "markdown" for t in re.findall(r"\]\(\s*<?([^)\s>]+)", c.source)]
    local = [t.split("#")[0] for t in targets if not re.match(r"^[a-z]+:", t)]
    assert local, "every notebook links its figure and its neighbours"
    for target in local:
        assert (es_path.parent / target).exists(), f"{english.name}: {target}"


def _glossary(section: str) -> list[list[str]]:
    text = (REPO / "notebooks" / "locale" / "GLOSSARY.md").read_text(encoding="utf-8")
    part = text.split(f"## {section}")[1].split("\n## ")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in part.splitlines() if line.startswith("| ")]
    return rows[1:]  # without the header


def _entries():
    for path in sorted((REPO / "notebooks" / "locale" / "es").glob("*.po")):
        yield from ((path.name, e) for e in polib.pofile(str(path)) if e.msgstr)


def test_terms_that_stay_english_stay_english():
    terms = [row[0] for row in _glossary("Terms that stay in English")]
    assert {"bucket", "storage credential", "external location"} <= set(terms)
    wrong = [f"{name} [{e.msgctxt}] {term!r}" for name, e in _entries() for term in terms
             if re.search(rf"\b{re.escape(term)}\b", e.msgid, re.I) and term.lower() not in e.msgstr.lower()]
    assert wrong == []


def test_the_layers_are_bronce_plata_oro():
    layers = {row[0].split(" ")[0]: row[1] for row in _glossary("Terms that are translated") if "(the layer)" in row[0]}
    assert layers == {"bronze": "Bronce", "silver": "Plata", "gold": "Oro"}
    wrong = []
    for name, e in _entries():
        for en, es in layers.items():
            if re.search(rf"\b{en} layer\b", e.msgid, re.I) and f"capa {es}" not in e.msgstr:
                wrong.append(f"{name} [{e.msgctxt}] {en} layer -> capa {es}")
            if re.search(rf"\b(capa|la) {es.lower()}\b", e.msgstr):  # capitalised, as the glossary says
                wrong.append(f"{name} [{e.msgctxt}] {es.lower()}")
    assert wrong == []


def test_changed_english_becomes_fuzzy_and_new_english_untranslated(tmp_path):
    home = tmp_path / "repo"
    (home / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", home)
    shutil.copy(ENGLISH[2], home / "notebooks")  # 02_kinesis_stream
    shutil.copytree(REPO / "notebooks" / "locale", home / "notebooks" / "locale")
    for po in (home / "notebooks" / "locale" / "es").glob("*.po"):
        if po.stem != ENGLISH[2].stem:
            po.unlink()
    assert tr.update(home).new == [] and tr.problems(home) == []
    path = home / "notebooks" / ENGLISH[2].name
    nb = nbformat.read(path, as_version=4)
    md = next(c for c in nb.cells if c.cell_type == "markdown" and "## 3. The shards" in c.source)
    md.source = md.source.replace("Order is guaranteed", "Ordering is guaranteed")
    nb.cells.append(nbformat.v4.new_markdown_cell("A brand new paragraph."))
    nb.cells.append(nbformat.v4.new_code_cell("x = 1  # a new comment\n# NBVAL_IGNORE_OUTPUT"))
    nbformat.write(nb, path)

    found = tr.problems(home)
    assert any("no entry for cell" in p and "A brand new paragraph" in p for p in found)
    assert any("out of date" in p for p in found)
    report = tr.update(home)
    assert [r.split("] ")[1] for r in report.new] == ["'A brand new paragraph.'", "'a new comment'"]
    assert len(report.fuzzy) == 1 and "## 3. The shards" in report.fuzzy[0]
    found = tr.problems(home)
    assert sum("fuzzy" in p for p in found) == 1 and sum("untranslated" in p for p in found) == 2
    assert not any("out of date" in p for p in found)  # regenerated, showing the English until translated
    po = polib.pofile(str(tr.catalog_path(home, path, "es")))
    fuzzy = next(e for e in po if "fuzzy" in e.flags)
    assert fuzzy.previous_msgid and "Order is guaranteed" in fuzzy.previous_msgid and fuzzy.msgstr.startswith("## 3. Los shards")
    es = nbformat.read(tr.edition_path(home, path, "es"), as_version=4)
    assert "Ordering is guaranteed" in next(c.source for c in es.cells if c.id == md.id)  # English until checked
    assert es.cells[-1].source == "x = 1  # a new comment\n# NBVAL_IGNORE_OUTPUT"


def test_relink_moves_relative_links_one_folder_up():
    md = "![a](../images/x.png) [n](01_x.ipynb) [r](../README.md) [w](https://a.b/c) [h](#top) <img src=\"../images/y.png\">"
    assert tr.relink(md) == ('![a](../../images/x.png) [n](01_x.ipynb) [r](../../README.md) [w](https://a.b/c) '
                             '[h](#top) <img src="../../images/y.png">')


def test_markdown_blocks_keep_fences_whole_and_find_their_comments():
    text = "# T\nintro\n\n```bash\naws s3 ls  # list\n\necho x\n```\ntail"
    assert tr.markdown_blocks(text) == [("text", "# T\nintro"), ("code", "```bash\naws s3 ls  # list\n\necho x\n```"),
                                        ("text", "tail")]
    cell = nbformat.v4.new_markdown_cell(text)
    assert tr.cell_messages(cell) == ["# T\nintro", "list", "tail"]
