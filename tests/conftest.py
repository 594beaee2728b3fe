"""Shared fixtures, and the markers that follow from them.

``local_stack`` starts a real moto server + local Firehose service (separate processes, own state
folder) once per test session and points boto3 at it; ``private_stacks`` / ``private_stack_dir`` give
a test or a module a state folder for a stack of its own; ``pipeline_builds`` gives build folders for
pipeline runs (each with its own Spark Connect server) and ``spark_session`` an in-process Spark.

A test is marked ``stack``, ``spark``, ``notebooks`` and ``slow`` from the fixtures it uses, directly
or through other fixtures (see FIXTURE_MARKERS), so ``-m`` selects correctly: ``-m "not spark and not
notebooks"`` runs everything without Java. A test that starts a stack or Spark without going through
these fixtures fails, saying which fixture to use (see ``pytest_runtest_setup``).
"""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest

from kinesis_lab.local import pipeline as local_pipeline
from kinesis_lab.local import stack
from kinesis_lab.local.pipeline import runner as pipeline_runner
from kinesis_lab.local.pipeline.class_archive import archive_java_options

REPO = Path(__file__).resolve().parents[1]
REGION = "us-east-1"

# fixture -> the markers every test using it (even indirectly) gets
FIXTURE_MARKERS = {
    "local_stack": ("stack",),
    "private_stacks": ("stack",),
    "pipeline_builds": ("spark", "slow"),  # a pipeline run: a Spark Connect server, 15-60 s per cold start
    "spark_session": ("spark",),
    "demo_run": ("notebooks", "slow"),  # the whole notebook series
    "nbval_build": ("notebooks", "slow"),  # the committed notebooks under nbval (tests/test_nbval.py)
}


# rough cost of a test by its markers, to start the longest modules first (see below)
MARKER_COST = {"notebooks": 100.0, "slow": 15.0, "spark": 1.5, "stack": 1.0}


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads the xdist_group marks added here
def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture in item.fixturenames:  # the closure: fixtures used through other fixtures count
            for marker in FIXTURE_MARKERS.get(fixture, ()):
                if item.get_closest_marker(marker) is None:
                    item.add_marker(marker)
    # Each module is one unit of work for a worker (`-n 2 --dist loadgroup`, make test), except that the
    # modules using the in-process SparkSession are one unit together: one JVM for them, not one per worker
    # (its start costs ~20 s of CPU). The longest units first, the order within a unit kept
    # (`--no-loadscope-reorder`): the long ones do not end up last on one worker while the other idles.
    # Tests never depend on the order.
    in_process = {item.nodeid.split("::")[0] for item in items if "spark_session" in item.fixturenames}

    def unit(item) -> str:
        module = item.nodeid.split("::")[0]
        return "in-process-spark" if module in in_process else module

    cost: dict[str, float] = {}
    slow_modules: set[str] = set()
    for item in items:
        item.add_marker(pytest.mark.xdist_group(unit(item)))
        marks = [m for m in MARKER_COST if item.get_closest_marker(m) is not None]
        cost[unit(item)] = cost.get(unit(item), 0.0) + max((MARKER_COST[m] for m in marks), default=0.1)
        module = item.nodeid.split("::")[0]
        if "slow" in marks and module not in slow_modules:
            cost[unit(item)] += 60.0  # a module with long tests (its first pipeline run starts a Spark server)
            slow_modules.add(module)
    items.sort(key=lambda item: (-cost[unit(item)], unit(item)))


# --- the guard: starting a stack or Spark outside the fixtures would escape `-m` -------------------
_running: dict[str, pytest.Item | None] = {"item": None}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _running["item"] = item  # module and session fixtures are set up within the first test's setup


def _guarded(marker: str, fixtures: str, what: str, func):
    def guard(*args, **kwargs):
        item = _running["item"]
        if item is not None and item.get_closest_marker(marker) is None:
            raise AssertionError(f"{item.nodeid} {what} but is not marked {marker!r}: use {fixtures}")
        return func(*args, **kwargs)

    guard.__wrapped__ = func
    return guard


stack.up = _guarded("stack", "the local_stack or private_stacks fixture", "starts a local stack", stack.up)
pipeline_runner._run_subprocess = _guarded(
    "spark", "the pipeline_builds fixture", "runs the pipeline (Spark)", pipeline_runner._run_subprocess
)


def _registry(stop):
    """A session fixture's body: yields ``register(folder)`` -> ``folder`` and, at the end of the session,
    calls ``stop(folder)`` on every folder registered."""
    folders: list[Path] = []

    def register(folder: Path) -> Path:
        folders.append(Path(folder))
        return Path(folder)

    yield register
    for folder in folders:
        stop(folder)


# --- the local stack ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def local_stack_dir(tmp_path_factory):
    """The state folder of the session's local stack."""
    return tmp_path_factory.mktemp("lab-state")


@pytest.fixture(scope="session")
def local_stack(local_stack_dir):
    """A running local stack: yields its StackState; boto3 in this process reaches it."""
    state_dir = local_stack_dir
    state, _ = stack.up(state_dir, REGION)
    saved = {k: os.environ.get(k) for k in stack.local_env(state.endpoint, REGION)}
    os.environ.update(stack.local_env(state.endpoint, REGION))
    try:
        yield state
    finally:
        stack.down(state_dir)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def clean_stack(local_stack):
    """The session's stack with every AWS resource wiped before the test."""
    stack.reset(local_stack.endpoint)
    return local_stack


@pytest.fixture
def aws_clients(clean_stack):
    def client(name: str):
        return boto3.client(name, region_name=REGION)

    return client


@pytest.fixture(scope="session")
def private_stacks():
    """``private_stacks(state_dir)`` -> ``state_dir``: a state folder for a stack of a test's or a
    module's own, started by the test (``stack.up``, ``kinesis-lab up``, a notebook); the user stops
    it, and whatever still runs there is stopped at the end of the session."""
    yield from _registry(stack.down)


@pytest.fixture
def private_stack_dir(private_stacks, tmp_path):
    """``tmp_path / "state"`` (not created): the state folder of this test's own stack, stopped after it."""
    state_dir = private_stacks(tmp_path / "state")
    yield state_dir
    stack.down(state_dir)


# --- Spark -------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pipeline_builds():
    """``pipeline_builds(build_dir)`` -> ``build_dir``: a build folder whose pipeline runs start (and
    reuse) its own Spark Connect server. Every module that runs the pipeline has its own: they would
    collide in one (same database and tables, and several kill or replace their server on purpose).
    Servers still running are stopped at the end of the session."""
    yield from _registry(local_pipeline.stop_pipeline_server)


@pytest.fixture(scope="session")
def spark_session():
    """One in-process SparkSession (local[2]) for every test that runs pipeline logic directly.
    Interpreted expressions, no adaptive re-planning, one shuffle partition: the tests' DataFrames have a
    few rows, and compiling code for each of their hundreds of queries costs more than it saves
    (tests/test_medallion.py alone: 60 s -> 46 s).
    The pipeline runs (pipeline_builds) use the lab's settings."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("kinesis-lab-tests")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.codegen.wholeStage", "false")
        .config("spark.sql.codegen.factoryMode", "NO_CODEGEN")
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.ansi.enabled", "true")  # the default in Spark 4: bad casts would raise
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.extraJavaOptions", archive_java_options())  # make test's class archive, if any
        .getOrCreate()
    )
    yield session
    session.stop()
