"""The Spanish edition: ``notebooks/es/`` generated from the English notebooks and one gettext catalog per
notebook (``notebooks/locale/es/<notebook>.po``).

An entry is keyed by the cell's id (``msgctxt``) and its English text (``msgid``): one entry per markdown
block (a paragraph, list, table or heading, split at blank lines) and one per code comment (in code cells and
in the markdown's fenced CLI blocks). Code is never translated. ``update`` adds new English text as untranslated
entries; text that changed keeps its old translation marked fuzzy (with the previous English as
``#| msgid``) until a translator checks it; text that is gone is dropped. ``render`` writes each Spanish notebook:
the English notebook (code, ids, stored outputs) with the translated text, and relative links one folder up.
``check`` fails on fuzzy or untranslated entries and on generated notebooks that are out of date.

    python -m kinesis_lab.course.translations update   # make translations
    python -m kinesis_lab.course.translations check    # make translations-check (tests/test_translations.py)
"""

from __future__ import annotations

import argparse
import copy
import difflib
import io
import re
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

LANGUAGES = ("es",)
FENCE = re.compile(r"^\s*(```|~~~)")
SHELL_COMMENT = re.compile(r"(?:^|(?<=\s))#(?![{!])\s?(.*)$")
# comments that are instructions to tools, not prose
TOOL_COMMENT = re.compile(r"^\s*(NBVAL_|noqa|type:|pragma|fmt:|COMMAND -|MAGIC|Databricks notebook source)")
LINK = re.compile(r"(\]\(\s*<?|\bsrc\s*=\s*[\"'])([^)\s>\"']+)")
SIMILAR = 0.5  # difflib ratio above which changed English keeps its old translation (as fuzzy)


@dataclass
class Report:
    new: list[str] = field(default_factory=list)
    fuzzy: list[str] = field(default_factory=list)
    dropped: int = 0
    written: list[str] = field(default_factory=list)


# --- what is translated ---------------------------------------------------------------------------
def markdown_blocks(text: str) -> list[tuple[str, str]]:
    """The markdown as ("text" | "code", block) pieces; joined with blank lines they give the cell back."""
    blocks, current, in_fence = [], [], False

    def close(kind: str) -> None:
        if current:
            blocks.append((kind, "\n".join(current)))
            current.clear()

    for line in text.split("\n"):
        if FENCE.match(line):
            if not in_fence:
                close("text")
                in_fence = True
                current.append(line)
                continue
            current.append(line)
            in_fence = False
            close("code")
            continue
        if not in_fence and not line.strip():
            close("text")
            continue
        current.append(line)
    close("code" if in_fence else "text")
    return blocks


def _python_comments(source: str) -> list[tuple[int, int, str]]:
    """(line index, column, text without '#') of each comment of a code cell."""
    found = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                found.append((tok.start[0] - 1, tok.start[1], tok.string))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return _shell_comments(source)
    return found


def _shell_comments(source: str) -> list[tuple[int, int, str]]:
    found = []
    for i, line in enumerate(source.split("\n")):
        m = SHELL_COMMENT.search(line)
        if m and not FENCE.match(line):
            found.append((i, m.start(), line[m.start():]))
    return found


def _comment_text(comment: str) -> tuple[str, str]:
    """'#  text' -> ('#  ', 'text')."""
    m = re.match(r"#+\s*", comment)
    return comment[: m.end()], comment[m.end():]


def _translatable_comments(source: str, python: bool) -> list[tuple[int, int, str, str]]:
    out = []
    for line, col, comment in (_python_comments(source) if python else _shell_comments(source)):
        prefix, text = _comment_text(comment)
        if text.strip() and not TOOL_COMMENT.match(text) and not comment.startswith("#!"):
            out.append((line, col, prefix, text))
    return out


def cell_messages(cell) -> list[str]:
    """The English texts of one cell that a translator translates, in order."""
    if cell["cell_type"] == "code":
        return [t for *_, t in _translatable_comments(cell["source"], python=True)]
    if cell["cell_type"] != "markdown":
        return []
    messages = []
    for kind, block in markdown_blocks(cell["source"]):
        if kind == "text":
            messages.append(block)
        else:
            messages += [t for *_, t in _translatable_comments(block, python=False)]
    return messages


# --- applying a catalog -----------------------------------------------------------------------------
def _replace_comments(source: str, python: bool, translate) -> str:
    lines = source.split("\n")
    for line, col, prefix, text in reversed(_translatable_comments(source, python)):
        lines[line] = lines[line][:col] + prefix + translate(text)
    return "\n".join(lines)


def relink(markdown: str, depth: int = 1) -> str:
    """Relative links and images one folder deeper: ``../images/x.png`` -> ``../../images/x.png``; links to
    the sibling notebooks (the Spanish ones sit side by side too) and absolute URLs stay."""
    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"^([a-z][a-z0-9+.-]*:|#|/)", target, re.IGNORECASE) or re.match(r"^[\w.-]+\.ipynb(#.*)?$", target):
            return m.group(0)
        return m.group(1) + "../" * depth + target

    return LINK.sub(fix, markdown)


def translate_cell(cell, translate) -> None:
    if cell["cell_type"] == "code":
        cell["source"] = _replace_comments(cell["source"], True, translate)
    elif cell["cell_type"] == "markdown":
        pieces = []
        for kind, block in markdown_blocks(cell["source"]):
            pieces.append(translate(block) if kind == "text" else _replace_comments(block, False, translate))
        cell["source"] = relink("\n\n".join(pieces))


def render(english, catalog) -> object:
    """The Spanish notebook: a copy of the English one (code, ids, outputs) with the catalog's translations;
    an untranslated or fuzzy entry shows its English text (and `check` fails on it)."""
    table = {(e.msgctxt, e.msgid): e.msgstr for e in catalog if e.msgstr and "fuzzy" not in e.flags and not e.obsolete}
    nb = copy.deepcopy(english)
    for cell in nb.cells:
        cid = cell.get("id")
        translate_cell(cell, lambda text, cid=cid: table.get((cid, text), text))
    nb.metadata["language"] = "es"
    return nb


# --- keeping the catalog in step with the English notebook ----------------------------------------
def _new_catalog(notebook: str, lang: str):
    import polib

    po = polib.POFile(wrapwidth=0)
    po.metadata = {"Project-Id-Version": f"kinesis-lab {notebook}", "Language": lang,
                   "MIME-Version": "1.0", "Content-Type": "text/plain; charset=UTF-8",
                   "Content-Transfer-Encoding": "8bit"}
    po.header = (f"{notebook} in {lang}: generated by `make translations` from notebooks/{notebook}.\n"
                 "Translate msgstr; remove the fuzzy flag once the translation matches the English again.\n"
                 "Terms: notebooks/locale/GLOSSARY.md")
    return po


def update_catalog(english, catalog, notebook: str, lang: str, report: Report, memory: dict | None = None):
    """A new catalog for the English notebook, reusing every translation of ``catalog`` that still applies;
    new English already translated word for word elsewhere (``memory``: msgid -> msgstr, e.g. the parameters
    cell every notebook repeats) takes that translation, as msgmerge does with a compendium."""
    import polib

    po = _new_catalog(notebook, lang)
    old = {(e.msgctxt, e.msgid): e for e in catalog if not e.obsolete}
    unused = dict(old)
    wanted = [(cell.get("id"), text) for cell in english.cells for text in cell_messages(cell)]
    for key in dict.fromkeys(wanted):
        unused.pop(key, None)
    for ctx, text in dict.fromkeys(wanted):
        entry = polib.POEntry(msgctxt=ctx, msgid=text, msgstr="")
        if (ctx, text) in old:
            prev = old[(ctx, text)]
            entry.msgstr, entry.flags, entry.previous_msgid = prev.msgstr, list(prev.flags), prev.previous_msgid
            if not entry.msgstr and (memory or {}).get(text):
                entry.msgstr = memory[text]
        else:
            match = _closest(ctx, text, unused)
            if match is not None:
                entry.msgstr, entry.flags, entry.previous_msgid = match.msgstr, ["fuzzy"], match.msgid
                unused.pop((match.msgctxt, match.msgid))
                report.fuzzy.append(f"{notebook} [{ctx}] {text[:60]!r}")
            elif (memory or {}).get(text):
                entry.msgstr = memory[text]
            else:
                report.new.append(f"{notebook} [{ctx}] {text[:60]!r}")
        entry.occurrences = [(f"notebooks/{notebook}", ctx)]
        po.append(entry)
    report.dropped += len(unused)
    return po


def _closest(ctx: str, text: str, unused: dict):
    """The unused entry this text most likely replaces: the same English moved to another cell, else the most
    similar English of the same cell."""
    same_text = [e for (c, t), e in unused.items() if t == text and e.msgstr]
    if same_text:
        return same_text[0]
    scored = [(difflib.SequenceMatcher(None, t, text).ratio(), e) for (c, t), e in unused.items() if c == ctx and e.msgstr]
    scored = [s for s in scored if s[0] >= SIMILAR]
    return max(scored, key=lambda s: s[0])[1] if scored else None


# --- the repository's files -------------------------------------------------------------------------
def english_notebooks(home: Path) -> list[Path]:
    return sorted(p for p in (home / "notebooks").glob("*.ipynb") if re.match(r"^\d\d_", p.name))


def catalog_path(home: Path, notebook: Path, lang: str) -> Path:
    return home / "notebooks" / "locale" / lang / f"{notebook.stem}.po"


def edition_path(home: Path, notebook: Path, lang: str) -> Path:
    return home / "notebooks" / lang / notebook.name


def _read(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def _load_catalog(path: Path, notebook: str, lang: str):
    import polib

    return polib.pofile(str(path), wrapwidth=0) if path.exists() else _new_catalog(notebook, lang)


def _notebook_text(nb) -> str:
    import nbformat

    return nbformat.writes(nb) + "\n"


def translation_memory(home: Path, lang: str) -> dict:
    """msgid -> msgstr of every checked translation in the language's catalogs."""
    import polib

    memory = {}
    for path in sorted((home / "notebooks" / "locale" / lang).glob("*.po")):
        for e in polib.pofile(str(path), wrapwidth=0):
            if e.msgstr and "fuzzy" not in e.flags and not e.obsolete:
                memory.setdefault(e.msgid, e.msgstr)
    return memory


def update(home: Path, langs=LANGUAGES) -> Report:
    """``make translations``: every catalog brought up to date with its English notebook, every edition
    regenerated; the report lists what needs a translator."""
    report = Report()
    for lang in langs:
        memory = translation_memory(home, lang)
        for nb_path in english_notebooks(home):
            english = _read(nb_path)
            po_path = catalog_path(home, nb_path, lang)
            po = update_catalog(english, _load_catalog(po_path, nb_path.name, lang), nb_path.name, lang, report,
                                memory)
            po_path.parent.mkdir(parents=True, exist_ok=True)
            po.save(str(po_path))
            out = edition_path(home, nb_path, lang)
            out.parent.mkdir(parents=True, exist_ok=True)
            text = _notebook_text(render(english, po))
            if not out.exists() or out.read_text(encoding="utf-8") != text:
                out.write_text(text, encoding="utf-8")
                report.written.append(str(out.relative_to(home)))
    return report


def problems(home: Path, langs=LANGUAGES) -> list[str]:
    """Everything ``make translations-check`` fails on, one line each."""
    found = []
    for lang in langs:
        expected = {nb.name for nb in english_notebooks(home)}
        extra = sorted(p.name for p in (home / "notebooks" / lang).glob("*.ipynb") if p.name not in expected)
        found += [f"notebooks/{lang}/{name}: no English notebook of that name" for name in extra]
        for nb_path in english_notebooks(home):
            found += _notebook_problems(home, nb_path, lang)
    return found


def _notebook_problems(home: Path, nb_path: Path, lang: str) -> list[str]:
    po_path = catalog_path(home, nb_path, lang)
    rel = po_path.relative_to(home)
    if not po_path.exists():
        return [f"{rel}: missing (run `make translations`)"]
    english, po = _read(nb_path), _load_catalog(po_path, nb_path.name, lang)
    found = []
    wanted = {(cell.get("id"), text) for cell in english.cells for text in cell_messages(cell)}
    entries = {(e.msgctxt, e.msgid): e for e in po if not e.obsolete}
    for ctx, text in sorted(wanted - set(entries), key=str):
        found.append(f"{rel}: no entry for cell {ctx}: {text[:60]!r} (run `make translations`)")
    for (ctx, text), e in entries.items():
        if (ctx, text) not in wanted:
            found.append(f"{rel}: entry for text no longer in the notebook, cell {ctx}: {text[:60]!r}")
        elif "fuzzy" in e.flags:
            found.append(f"{rel}: fuzzy (the English changed), cell {ctx}: {text[:60]!r}")
        elif not e.msgstr:
            found.append(f"{rel}: untranslated, cell {ctx}: {text[:60]!r}")
    out = edition_path(home, nb_path, lang)
    if not out.exists() or out.read_text(encoding="utf-8") != _notebook_text(render(english, po)):
        found.append(f"{out.relative_to(home)}: out of date (run `make translations`)")
    return found


def main(argv: list[str] | None = None) -> int:
    from kinesis_lab.cloud.config import find_home

    parser = argparse.ArgumentParser(prog="python -m kinesis_lab.course.translations", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["update", "check"])
    args = parser.parse_args(argv)
    home = find_home()
    if args.command == "update":
        report = update(home)
        for line in report.written:
            print(f"wrote {line}")
        for kind in ("new", "fuzzy"):
            for line in getattr(report, kind):
                print(f"{kind:5} {line}")
        print(f"{len(report.new)} new, {len(report.fuzzy)} fuzzy, {report.dropped} dropped entries; "
              f"{len(report.written)} notebooks written")
        return 0
    found = problems(home)
    for line in found:
        print(line)
    print(f"translations: {len(found)} problems" if found else "translations: every entry translated, editions up to date")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
