"""The suite runs in two parts (Makefile): ``make test``, the developer loop, is every test not marked ``notebooks``;
``make test-notebooks`` is the tests that run notebooks in a kernel (the series, and single notebooks) or show them in
a browser (JupyterLab, the book). Together they are the whole suite, and CI
(.ci/run), ``make test-all``, ``make test-latest`` and ``make test-under-load`` run both."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pytest_commands(target: str) -> list[str]:
    """The pytest command lines ``make <target>`` would run (a dry run; install and lint taken as done)."""
    run = subprocess.run(["make", "-n", "--no-print-directory", "-o", "install", "-o", "lint", target], cwd=REPO,
                         capture_output=True, text=True, check=True)
    return [line for line in run.stdout.splitlines() if " -m pytest tests " in line]


def selection(command: str) -> str:
    match = re.search(r' -m ("not notebooks"|notebooks) ', command + " ")
    assert match, command
    return match.group(1)


def test_make_test_and_make_test_notebooks_split_the_suite_by_the_notebooks_marker():
    assert [selection(c) for c in pytest_commands("test")] == ['"not notebooks"']
    assert [selection(c) for c in pytest_commands("test-notebooks")] == ["notebooks"]
    for target in ("test-all", "test-latest"):
        assert sorted(selection(c) for c in pytest_commands(target)) == ['"not notebooks"', "notebooks"], target


def test_ci_and_the_robustness_check_run_both_parts():
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^time make test(\s|$)", ci, re.M) and re.search(r"^time make test-notebooks(\s|$)", ci, re.M), ci
    under_load = (REPO / "Makefile").read_text().split("test-under-load: install")[1].split("\n\n")[0]
    assert "$(MAKE) test-all" in under_load


def test_the_notebook_part_holds_every_series_and_every_test_that_runs_or_shows_a_notebook():
    run = subprocess.run([sys.executable, "-m", "pytest", "tests", "-m", "notebooks", "--collect-only", "-q",
                          "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    tests = {line.split("@")[0] for line in run.stdout.splitlines() if "::" in line}
    modules = {test.split("::")[0] for test in tests}
    series = {"tests/test_nbval.py", "tests/test_demo_e2e.py", "tests/test_cli_blocks.py",
              "tests/test_databricks_mode.py", "tests/test_notebooks_ownership_and_aws_target.py"}
    assert series <= modules, modules  # every series, whole
    one_notebook = {"tests/test_out_of_order.py", "tests/test_original_course.py", "tests/test_progress.py"}
    browser = {"tests/test_book.py", "tests/test_jupyterlab.py"}
    assert modules == series | one_notebook | browser, modules
    assert "tests/test_progress.py::test_executed_notebook_stores_the_final_state" in tests, tests
    assert "tests/test_book.py::test_pages_load_in_headless_chromium_without_console_errors" in tests, tests
