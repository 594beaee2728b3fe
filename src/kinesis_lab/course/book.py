"""``make book``: both editions of the course as one static, searchable site, from the notebooks as committed (with
their stored outputs; nothing is executed), built offline with MkDocs (mkdocs-material,
mkdocs-static-i18n: English at the root, Spanish under ``es/``, a language switch on every page).

Each notebook becomes a Markdown page with nbconvert (its code, its stored outputs, their figures as files beside
it) in ``<out>/docs/{en,es}/notebooks/``, ``images/`` beside them; links between notebooks point at the pages
(``01_x.ipynb`` -> ``01_x.md``), so MkDocs checks and rewrites them. (mkdocs-jupyter would render the notebooks
itself, but mkdocs-static-i18n serves them as downloads: ultrabug/mkdocs-static-i18n#198.)

    python -m kinesis_lab.course.book [--out build/book]   # -> build/book/site/index.html
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

LIST_AFTER_TEXT = re.compile(r"^((?![-*] |\d+\. |\s|>|\|).+)\n([-*] |1\. )", re.M)
NOTEBOOK_LINK = re.compile(r"(\]\(\s*<?)(\d\d_[\w-]+)\.ipynb")
TITLES = {"en": "Kinesis → Firehose → S3 → Databricks: a hands-on streaming pipeline",
          "es": "Kinesis → Firehose → S3 → Databricks: un pipeline de streaming práctico"}
INTRO = {
    "en": "A course in numbered Jupyter notebooks: a CSV is produced into **Kinesis Data Streams**, **Data Firehose** "
          "delivers it to **S3**, and **Databricks** reads the bucket into a Lakeflow pipeline, bronze → silver → gold. "
          "This book shows every notebook with the outputs of a local run; to run them yourself, clone the repository "
          "and `make lab` (the README says how).",
    "es": "Un curso en notebooks de Jupyter numerados: un CSV se produce en **Kinesis Data Streams**, **Data Firehose** "
          "lo entrega en **S3** y **Databricks** lee el bucket en un pipeline de Lakeflow, Bronce → Plata → Oro. "
          "Este libro muestra cada notebook con las salidas de una ejecución local; para ejecutarlos tú, clona el "
          "repositorio y lanza `make lab LAB_LANG=es` (el README.es.md explica cómo).",
}
NOTEBOOKS_HEADING = {"en": "The notebooks", "es": "Los notebooks"}


def _title(nb_path: Path) -> str:
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return m.group(1).replace("*", "").strip()
    return nb_path.stem


def _stage_notebook(src: Path, target: Path) -> None:
    """The notebook as a Markdown page with its stored outputs; links to other notebooks point at their pages,
    images one folder up (as in the English edition)."""
    import nbformat
    from nbconvert import MarkdownExporter

    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = NOTEBOOK_LINK.sub(r"\1\2.md", cell.source)
            cell.source = cell.source.replace("../../images/", "../images/")  # the Spanish edition's depth
            cell.source = LIST_AFTER_TEXT.sub(r"\1\n\n\2", cell.source)  # Python-Markdown needs the blank line
    files = f"{src.stem}_files"
    body, resources = MarkdownExporter().from_notebook_node(
        nb, resources={"unique_key": src.stem, "output_files_dir": files})
    for name, data in resources.get("outputs", {}).items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(data)
    (target / f"{src.stem}.md").write_text(body, encoding="utf-8")


def stage(home: Path, docs: Path) -> dict[str, list[tuple[str, str]]]:
    """The docs folder of both editions; returns each edition's (page, title) in order."""
    shutil.rmtree(docs, ignore_errors=True)
    pages = {}
    for lang, folder in (("en", home / "notebooks"), ("es", home / "notebooks" / "es")):
        target = docs / lang / "notebooks"
        target.mkdir(parents=True)
        shutil.copytree(home / "images", docs / lang / "images")
        pages[lang] = []
        for nb in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
            _stage_notebook(nb, target)
            pages[lang].append((f"notebooks/{nb.stem}.md", _title(nb)))
        listing = "\n".join(f"- [{title}]({page})" for page, title in pages[lang])
        (docs / lang / "index.md").write_text(
            f"# {TITLES[lang]}\n\n![architecture](images/architecture.png)\n\n{INTRO[lang]}\n\n"
            f"## {NOTEBOOKS_HEADING[lang]}\n\n{listing}\n", encoding="utf-8")
    return pages


def mkdocs_config(docs: Path, site: Path, pages: dict) -> dict:
    nav = [{"Home": "index.md"}, *({title: page} for page, title in pages["en"])]
    nav_es = {title_en: title_es for (_, title_en), (_, title_es) in zip(pages["en"], pages["es"], strict=True)}
    return {
        "site_name": "kinesis-lab",
        "docs_dir": str(docs),
        "site_dir": str(site),
        "use_directory_urls": False,  # a notebook page sits where its ../images/ resolve, and works from file://
        "theme": {"name": "material", "font": False,  # no web fonts: the site works offline
                  "features": ["navigation.footer", "search.highlight"]},
        "nav": nav,
        "markdown_extensions": ["tables", "fenced_code", "md_in_html", {"toc": {"permalink": True}},
                                "pymdownx.highlight", "pymdownx.superfences"],
        "validation": {"links": {"not_found": "warn", "unrecognized_links": "warn"}},
        "plugins": [
            "search",
            {"i18n": {"docs_structure": "folder", "reconfigure_material": True, "languages": [
                {"locale": "en", "name": "English", "default": True, "build": True},
                {"locale": "es", "name": "Español", "build": True, "site_name": "kinesis-lab (es)",
                 "nav_translations": {"Home": "Inicio", **nav_es}},
            ]}},
        ],
    }


def build(home: Path, out: Path) -> Path:
    """Stage and build; returns the site folder."""
    import yaml

    docs, site = out / "docs", out / "site"
    pages = stage(home, docs)
    config = out / "mkdocs.yml"
    config.write_text(yaml.safe_dump(mkdocs_config(docs, site, pages), allow_unicode=True, sort_keys=False),
                      encoding="utf-8")
    shutil.rmtree(site, ignore_errors=True)
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config)],
                          capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    if done.returncode != 0 or not (site / "index.html").is_file():
        raise RuntimeError(f"mkdocs build failed ({done.returncode}):\n{done.stderr[-3000:]}")
    # material's language switch fetches sitemap.xml beside the page's root as i18n sets it (es/, notebooks/):
    # without a copy there, a 404 in the browser's console
    for folder in (site / "es", site / "notebooks", site / "es" / "notebooks"):
        shutil.copy(site / "sitemap.xml", folder / "sitemap.xml")
    return site


def main(argv: list[str] | None = None) -> int:
    from kinesis_lab.cloud.config import find_home

    parser = argparse.ArgumentParser(prog="python -m kinesis_lab.course.book", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="default: <repository>/build/book")
    args = parser.parse_args(argv)
    home = find_home()
    try:
        site = build(home, (args.out or home / "build" / "book").resolve())
    except RuntimeError as exc:
        print(f"book: {exc}", file=sys.stderr)
        return 1
    print(f"book: {site / 'index.html'} (English) and {site / 'es' / 'index.html'} (Spanish)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
