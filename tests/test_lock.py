"""The lock (requirements/lock.txt) holds what pyproject.toml asks for: every dependency and extra pinned with ==,
inside its range, with hashes; requirements/uv.txt is the lock's uv block (see requirements/README.md)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"


def locked_entries(text: str) -> dict[str, list[tuple[str, list[str]]]]:
    """name -> [(version, hashes)], one per pinned block (a package may be pinned per platform)."""
    entries: dict[str, list[tuple[str, list[str]]]] = {}
    for block in re.split(r"\n(?=\S)", text):
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;\\]+)", block)
        if match:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            entries.setdefault(canonicalize_name(match.group(1)), []).append((match.group(2), hashes))
    return entries


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [req for group in project["optional-dependencies"].values() for req in group]
    return [Requirement(req) for req in project["dependencies"] + extras]


def test_every_dependency_is_locked_inside_its_range_with_hashes():
    entries = locked_entries(LOCK.read_text())
    problems = []
    for req in project_requirements():
        pinned = entries.get(canonicalize_name(req.name))
        if not pinned:
            problems.append(f"{req.name}: not in the lock")
            continue
        problems += [f"{req.name}=={v}: outside {req.specifier}" for v, _ in pinned if v not in req.specifier]
    problems += [f"{name}=={v}: no hash" for name, pins in entries.items() for v, hashes in pins if not hashes]
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_the_lock_pins_the_moto_the_suite_needs():
    [(version, _)] = locked_entries(LOCK.read_text())["moto"]
    assert Requirement("moto>=5.2.5").specifier.contains(version), version


def test_uv_bootstrap_is_the_locks_uv_block():
    uv_txt = (REPO / "requirements" / "uv.txt").read_text()
    assert locked_entries(uv_txt)["uv"] == locked_entries(LOCK.read_text())["uv"], "run `make lock`"
    assert list(locked_entries(uv_txt)) == ["uv"]


def test_the_installers_read_the_lock():
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r $(LOCK)" in makefile and "pip sync" in makefile
    assert "-r requirements/lock.txt" in (REPO / "environment.yml").read_text()
    assert "--require-hashes -r requirements\\lock.txt" in (REPO / "README.md").read_text()
