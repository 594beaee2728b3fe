"""The package is laid out by role, and its imports run one way: course tooling -> local stand-ins ->
code that runs on a real account (cloud), never back; no import cycle; modules and functions stay small.

The size limits cover the package, the benchmarks (benchmarks/*.py) and the tests' helpers (every
tests/*.py that is not a test module: conftest.py, waiting.py, helpers.py, the stand-ins); the test
modules themselves are not held to them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "kinesis_lab"
WINGS = ("cloud", "local", "course")  # in the order imports may go: a wing imports only itself and those before
TOP_LEVEL = {"connect": "kinesis_lab.local.targets"}  # the package's own names that come from a wing
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else None


def imports_of(path: Path, module: str) -> set[str]:
    """Every kinesis_lab module this file imports, at any depth (inside functions too)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    known = modules()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kinesis_lab")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("kinesis_lab"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if base == "kinesis_lab" and alias.name in TOP_LEVEL:
                    candidate = TOP_LEVEL[alias.name]
                found.add(candidate if candidate in known else base)
    return found


def test_every_module_belongs_to_a_wing():
    loose = [m for m in modules() if m != "kinesis_lab" and wing(m) is None]
    assert loose == [], "modules outside cloud/, local/ and course/"


@pytest.mark.parametrize("module", [m for m in modules() if wing(m)])
def test_imports_run_from_tooling_to_stand_ins_to_real_account_code(module):
    allowed = WINGS[: WINGS.index(wing(module)) + 1]
    wrong = sorted(i for i in imports_of(modules()[module], module)
                   if i != "kinesis_lab" and (wing(i) not in allowed))
    assert wrong == [], f"{module} ({wing(module)}) imports {wrong}"


def test_no_import_cycle():
    graph = {m: {i for i in imports_of(p, m) if i in modules() and i != m} for m, p in modules().items()}
    # the package itself only re-exports (lazily for connect): leave it out
    graph = {m: {i for i in deps if i != "kinesis_lab"} for m, deps in graph.items() if m != "kinesis_lab"}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt])
                return True
            if nxt not in state and visit(nxt, [*path, node]):
                return True
        state[node] = 2
        return False

    for module in sorted(graph):
        if module not in state and visit(module, []):
            break
    assert cycle == []


def sized_files() -> dict[str, Path]:
    """What the size limits cover: the package's modules (by module name), the benchmarks and the tests'
    helpers (by path)."""
    found = dict(modules())
    helpers = [p for p in sorted((REPO / "tests").glob("*.py")) if not p.name.startswith("test_")]
    for path in sorted((REPO / "benchmarks").glob("*.py")) + helpers:
        found[path.relative_to(REPO).as_posix()] = path
    return found


def test_the_size_limits_cover_the_benchmarks_and_the_test_helpers():
    covered = set(sized_files())
    assert {"benchmarks/run.py", "tests/conftest.py", "tests/waiting.py"} <= covered, sorted(covered)
    assert not any(name.startswith("tests/test_") for name in covered)


@pytest.mark.parametrize("module", list(sized_files()))
def test_modules_and_functions_stay_small(module):
    path = sized_files()[module]
    source = path.read_text(encoding="utf-8")
    lines = source.count("\n")
    assert lines <= MAX_MODULE_LINES, (
        f"{module} has {lines} lines, more than {MAX_MODULE_LINES}: split it, one module per job"
    )
    long = [f"{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == [], f"{module}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"
