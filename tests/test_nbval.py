"""The committed notebooks, re-run in order by nbval on a private stack and build folder, with every notebook's own
checks and the ``# NBVAL_CHECK_OUTPUT`` outputs compared with the stored ones (the shipped sample's series).

The English notebooks only (not notebooks/es, which pytest would collect from ``notebooks``): the Spanish ones hold
the same code cells and stored outputs (tests/test_translations.py), so nbval would compare the same outputs again;
the Spanish series runs in tests/test_demo_e2e.py, from its own folder.

A test of the suite rather than a second pytest run after it, so that under ``-n 2`` the series runs beside the
other modules instead of after them (``make nbval`` runs this module alone)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kinesis_lab.course.translations import english_notebooks
from kinesis_lab.local import pipeline as local_pipeline
from kinesis_lab.local import stack

REPO = Path(__file__).resolve().parents[1]
NBVAL_ARGS = ["--nbval-lax", "--nbval-sanitize-with", str(REPO / "tests" / "nbval_sanitize.cfg"),
              "-p", "no:cacheprovider", "-q"]
TIMEOUT = 1800  # seconds: the series takes about a minute on 2 cores


@pytest.fixture(scope="module")
def nbval_build(tmp_path_factory, private_stacks, pipeline_builds):
    """A build folder with its own stack (``LAB_STATE_DIR``) for the series; both stopped afterwards."""
    build = pipeline_builds(tmp_path_factory.mktemp("nbval") / "build")
    state = private_stacks(build / "stack")
    yield build
    stack.down(state)
    local_pipeline.stop_pipeline_server(build)


ENGLISH = english_notebooks(REPO)  # 00 ... 09, 99: the series' order


def nbval(notebooks: list[Path], build: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LAB_", "AWS_"))}
    env.update(LAB_BUILD_DIR=str(build), LAB_STATE_DIR=str(build / "stack"), LAB_TARGET="local")
    return subprocess.run([sys.executable, "-m", "pytest", *NBVAL_ARGS, *map(str, notebooks)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_the_committed_notebooks_pass_nbval(nbval_build):
    run = nbval(ENGLISH, nbval_build)
    print(run.stdout)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    cells = sum(c.cell_type == "code" for n in ENGLISH for c in nbformat.read(n, as_version=4).cells)
    assert len(ENGLISH) == 11 and passed and int(passed.group(1)) == cells, summary  # every cell of the 11, once
