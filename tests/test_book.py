"""`make book`: both editions as a static site, every link and image valid, pages load in headless Chromium
(Debian's `chromium`, driven by Playwright; no browser download) without console errors or outside requests."""

from __future__ import annotations

import html.parser
import os
import shutil
import urllib.parse
from pathlib import Path

import pytest

from kinesis_lab.course import book

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and (name == "src" or (name == "href" and tag in ("a", "link"))):
                self.refs.append((tag, value))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return book.build(REPO, tmp_path_factory.mktemp("book"))


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_both_editions_have_every_notebook(site):
    for prefix in ("", "es/"):
        names = sorted(p.name for p in (site / prefix / "notebooks").glob("*.html"))
        assert names == sorted(p.stem + ".html" for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert "Qué vas a aprender" in (site / "es" / "notebooks" / "00_setup.html").read_text(encoding="utf-8")
    assert "What you&rsquo;ll learn" in (site / "notebooks" / "00_setup.html").read_text(encoding="utf-8") or \
        "What you'll learn" in (site / "notebooks" / "00_setup.html").read_text(encoding="utf-8")
    assert (site / "search" / "search_index.json").is_file()


def test_every_link_and_image_of_the_site_resolves(site):
    checked, broken = 0, []
    for page in _pages(site):
        if page.name == "404.html":
            continue  # served for any missing URL: its links are absolute from the site's root
        parser = _Refs()
        parser.feed(page.read_text(encoding="utf-8"))
        for tag, ref in parser.refs:
            parts = urllib.parse.urlsplit(ref)
            if parts.scheme in ("http", "https", "mailto", "data") or ref.startswith("#"):
                assert not (tag in ("img", "script", "link") and parts.scheme in ("http", "https")) or \
                    "squidfunk" in ref, f"{page}: loads {ref} from outside"
                continue
            target = (page.parent / urllib.parse.unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: {ref}")
    assert broken == [] and checked > 500


def test_language_switch_links_each_page_to_its_translation(site):
    en = (site / "notebooks" / "03_firehose_delivery_stream.html").read_text(encoding="utf-8")
    es = (site / "es" / "notebooks" / "03_firehose_delivery_stream.html").read_text(encoding="utf-8")
    assert "es/notebooks/03_firehose_delivery_stream.html" in en and "Español" in en
    assert "notebooks/03_firehose_delivery_stream.html" in es and "English" in es


@pytest.mark.notebooks  # the pages in a browser: make test-notebooks
@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Debian's chromium is not installed")
def test_pages_load_in_headless_chromium_without_console_errors(site, tmp_path):
    """Served over HTTP on 127.0.0.1 (the search index is fetched with XMLHttpRequest, which file:// refuses)."""
    import functools
    import http.server
    import threading


    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        _browse(site, base, tmp_path)
    finally:
        server.shutdown()


def _browse(site: Path, base: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "apt-get install -y chromium (.ci/run installs it)"
    errors: list[str] = []
    outside: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                        args=CHROMIUM_FLAGS[1:], headless=True)
        page = browser.new_page()
        page.on("console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((base, "data:")) else None)
        for html_page in [p for p in _pages(site) if p.name != "404.html"]:
            page.goto(base + html_page.relative_to(site).as_posix(), wait_until="networkidle")
            assert page.title(), html_page
        page.goto(base + "es/notebooks/00_setup.html", wait_until="networkidle")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.src, e.naturalWidth])")
        assert images and all(width > 0 for _, width in images), images
        page.screenshot(path=os.environ.get("BOOK_SCREENSHOT") or str(tmp_path / "00_setup.es.png"), full_page=False)
        page.click("label.md-search__icon, .md-search__input")  # the search works offline
        page.keyboard.type("cuarentena", delay=50)
        page.wait_for_selector(".md-search-result__item", timeout=60_000)
        browser.close()
    assert errors == [] and outside == []
