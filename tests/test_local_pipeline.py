"""The local stand-ins for Databricks: S3 mirror (against the real local stack) and the real pipeline
run with spark-pipelines (first load, nothing new, one new file, a full refresh, through one long-lived
Spark Connect server), plus the server's bookkeeping (stop, a dead server replaced, watchdog, in-process runs
stopping it first) on stand-in processes."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import record_line, stop_processes
from waiting import DEADLINE, wait_until

from kinesis_lab.cloud.prefixes import static_folder
from kinesis_lab.local import pipeline as lp
from kinesis_lab.local import procs, stack
from kinesis_lab.local.pipeline import runner as lp_runner
from kinesis_lab.local.pipeline import server as lp_server
from kinesis_lab.local.pipeline.warmup import WARM_UP_ENV

REPO = Path(__file__).resolve().parents[1]
PIPELINE_DIR = REPO / "databricks" / "pipeline"
PREFIX = "bronze/ingestion_date=!{timestamp:yyyy/MM/dd}/"
DAY = "bronze/ingestion_date=2026/11/26/"


# --- pure helpers --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "prefix, expected",
    [
        (PREFIX, "bronze/"),
        ("bronze/", "bronze/"),
        ("bronze/ingestion_date=!{timestamp:yyyy/MM/dd}", "bronze/"),
        ("data/bronze-!{timestamp:yyyy}/", "data/"),
        ("", ""),
    ],
)
def test_static_folder(prefix, expected):
    assert static_folder(prefix) == expected


def test_settings_split_between_spec_and_server_start(tmp_path):
    pipeline, static = lp.spark_settings(
        source_path=tmp_path / "src", build_dir=tmp_path, extra_conf={"spark.sql.ansi.enabled": "true"}
    )
    assert pipeline["lab.source_mode"] == "files"
    assert pipeline["lab.source_path"] == str((tmp_path / "src").resolve())
    assert pipeline["spark.sql.shuffle.partitions"] == "2"
    assert pipeline["spark.sql.ansi.enabled"] == "true"
    assert static["spark.sql.catalogImplementation"] == "hive"
    assert static["spark.sql.warehouse.dir"].startswith(str(tmp_path.resolve()))
    assert str(tmp_path.resolve()) in static["spark.hadoop.javax.jdo.option.ConnectionURL"]
    assert not set(pipeline) & set(static)


def test_render_spec_points_at_the_committed_transformations(tmp_path):
    import yaml

    spec_path = lp.render_spec(
        PIPELINE_DIR, build_dir=tmp_path / "build", configuration={"lab.source_path": "/x"}
    )
    spec = yaml.safe_load(spec_path.read_text())
    include = spec["libraries"][0]["glob"]["include"]
    assert (spec_path.parent / include.removesuffix("/**")).resolve() == PIPELINE_DIR / "transformations"
    assert spec["storage"].startswith("file:///") and spec["storage"].endswith("/lakehouse/storage")
    assert spec["database"] == "bronze"
    assert spec["configuration"]["lab.source_path"] == "/x"
    committed = yaml.safe_load((PIPELINE_DIR / lp.SPEC_NAME).read_text())
    assert committed["libraries"] == [{"glob": {"include": "transformations/**"}}]


def test_short_progress_and_log_tail(tmp_path):
    line = "2026-11-26 01:13:15: Flow spark_catalog.bronze.bronze_events has COMPLETED.\n"
    assert lp_runner._short_progress(line) == "01:13:15 bronze_events has COMPLETED"
    log = tmp_path / "run.log"
    log.write_text('start\nboom: it failed\n\tat org.apache.Foo(Foo.scala:1)\n  File "x.py", line 1\nlast\n')
    assert lp_runner._log_tail(log) == "start\nboom: it failed\nlast"


def test_server_lines_are_shown_and_parsed():
    started = "Spark Connect server started: pid 4242, sc://localhost:40000 in 21.0 s (logs: /x)\n"
    replacing = "Spark Connect server: replacing pid 4241: does not answer within 20 s\n"
    assert lp.PROGRESS_LINE.search(started) and lp.PROGRESS_LINE.search(replacing)
    assert lp.SERVER_LINE.search(started).groups() == ("started", "4242")
    assert not lp.SERVER_LINE.search(replacing)
    assert lp_runner._short_progress(started) == started.strip().rstrip(".")


def test_read_table_uses_only_committed_files_of_a_streaming_table(tmp_path):
    table = lp.warehouse_dir(tmp_path) / "silver.db" / "silver_events"
    (table / "_spark_metadata").mkdir(parents=True)
    pq.write_table(pa.table({"event_id": ["a", "b"]}), table / "part-0.parquet")
    pq.write_table(pa.table({"event_id": ["zombie"]}), table / "part-1.parquet")  # a failed batch's leftover
    entry = {"path": (table / "part-0.parquet").as_uri(), "size": 1, "isDir": False, "action": "add"}
    (table / "_spark_metadata" / "0").write_text("v1\n" + json.dumps(entry) + "\n")
    assert sorted(lp.read_table(tmp_path, "silver_events")["event_id"]) == ["a", "b"]
    assert lp.table_rows(tmp_path, "silver_events") == 2
    assert lp.table_paths(tmp_path) == {"silver_events": table}
    with pytest.raises(KeyError, match="no table gold.gold_x in"):
        lp.read_table(tmp_path, "gold_x")
    read = lp.table_reader(tmp_path)  # what the ledger takes: None for a table not made yet
    assert list(read("silver_events", ["event_id"])["event_id"]) == ["a", "b"]
    assert read("silver_quarantine", ["event_id"]) is None


def test_the_subprocesses_run_the_package_entry_point(tmp_path):
    """The run and the watchdog are ``python -P -m kinesis_lab.local.pipeline.spark_cli ...`` (what
    test_faults finds the run by); the entry point runs: a watchdog of no server exits at once."""
    command = lp_runner._pipelines_command(tmp_path / "spec.yml", full_refresh=True)
    assert command == [sys.executable, "-P", "-m", "kinesis_lab.local.pipeline.spark_cli", "run",
                       "--spec", str(tmp_path / "spec.yml"), "--full-refresh-all"]  # fmt: skip
    watchdog = lp_server.cli_command("watch-server", str(lp.lakehouse_dir(tmp_path)), "999999999", "0", "")
    done = subprocess.run(watchdog, cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE)
    assert (done.returncode, done.stderr) == (0, "")


# --- mirror (real local stack) ---------------------------------------------------------------------
def test_mirror_is_incremental_and_keeps_the_key_layout(aws_clients, tmp_path):
    s3 = aws_clients("s3")
    s3.create_bucket(Bucket="mirror-test")
    s3.put_object(Bucket="mirror-test", Key=DAY + "stream-1-a", Body=b'{"a": 1}\n')
    s3.put_object(Bucket="mirror-test", Key=DAY + "stream-1-b.gz", Body=gzip.compress(b'{"b": 2}\n'))
    s3.put_object(Bucket="mirror-test", Key="errors/processing-failed/x", Body=b"not mirrored")
    target = tmp_path / "external_location"

    first = lp.mirror_s3_prefix(s3, "mirror-test", PREFIX, target)
    assert (first.new_objects, first.total_objects) == (2, 2)
    assert first.source_dir == target / "bronze"
    assert (target / DAY / "stream-1-a").read_bytes() == b'{"a": 1}\n'
    assert gzip.decompress((target / DAY / "stream-1-b.gz").read_bytes()) == b'{"b": 2}\n'
    assert first.new_bytes == first.total_bytes == sum(p.stat().st_size for p in (target / DAY).iterdir())
    assert not (target / "errors").exists()

    again = lp.mirror_s3_prefix(s3, "mirror-test", PREFIX, target)
    assert (again.new_objects, again.total_objects, again.new_bytes) == (0, 2, 0)

    s3.put_object(Bucket="mirror-test", Key=DAY + "stream-1-c", Body=b'{"c": 3}\n')
    (target / DAY / "stream-1-a").unlink()  # a lost local copy is fetched again
    third = lp.mirror_s3_prefix(s3, "mirror-test", PREFIX, target)
    assert sorted(third.new_keys) == [DAY + "stream-1-a", DAY + "stream-1-c"]
    assert third.total_objects == 3
    assert not [p for p in (target / DAY).iterdir() if p.name.startswith(".")], "no partial files left"


# --- the real pipeline -------------------------------------------------------------------------------
_counter = iter(range(1, 10**6))


def rec(event_id: str | None = None, **overrides) -> str:
    return record_line(event_id or f"evt-{next(_counter):04d}", **overrides)


def bad_marker(event_id: str) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "source_file": "child_labor.csv",
            "source_line": 9,
            "produced_at": "2026-11-26T01:02:03.123Z",
            "malformed": True,
            "error": "too many fields (9, expected 8)",
            "raw_line": "a,b,c,d,e,f,g,h,i",
        }
    )


def write_lines(path: Path, lines: list[str], gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)


UPSTREAM = {
    "silver_events": ["bronze_events"],
    "silver_quarantine": ["bronze_events"],
    "gold_rate_by_region_year": ["silver_events"],
    "gold_top_countries_latest": ["silver_events"],
    "gold_gender_comparison": ["silver_events"],
    "gold_quarantine_by_rule": ["silver_quarantine"],
    "gold_aggregate_rates": ["silver_events"],
}
TABLES = ("bronze_events", "silver_events", "silver_quarantine", "gold_rate_by_region_year", "gold_top_countries_latest")


@dataclass
class Stage:
    """What one pipeline run of the sequence saw: the tables before and after it, the servers."""

    result: lp.PipelineRun
    before: dict  # pipeline_summary before the run
    after: dict
    tables: dict  # table -> DataFrame, right after the run
    servers: list[int]  # the build folder's server pids after the run
    previous_server: int | None  # the server the previous run used
    ingested_before: object  # the latest bronze _ingested_at before the run (None: no bronze yet)


class Sequence:
    """One build folder through four runs, in order: first load, nothing new, one new file, a full refresh.
    ``stage(name)`` runs whatever earlier runs it needs first, so each test below works alone, in any order
    (a stage that failed fails every later one). A server SIGKILLed and replaced (a second JVM start) is in
    tests/test_pipeline_faults.py; the branch for a server killed between runs, without Spark, below."""

    STAGES = ("first", "no_new_data", "new_file", "full_refresh")

    def __init__(self, build: Path, source: Path):
        self.build, self.source = build, source
        self.done: dict[str, Stage] = {}
        self.failed: dict[str, str] = {}
        self.server_pid: int | None = None
        self.durations: dict[str, float] = {}

    def stage(self, name: str) -> Stage:
        for step in self.STAGES[: self.STAGES.index(name) + 1]:
            if step in self.failed:
                pytest.fail(f"pipeline run '{step}' failed: {self.failed[step]}")
            if step not in self.done:
                try:
                    self.done[step] = self._run(step)
                except BaseException as exc:
                    self.failed[step] = f"{type(exc).__name__}: {exc}"
                    raise
        return self.done[name]

    def _run(self, step: str) -> Stage:
        before = lp.pipeline_summary(self.build)
        bronze = lp.read_table(self.build, "bronze_events") if before["bronze_rows"] else None
        ingested_before = bronze["_ingested_at"].max() if bronze is not None else None
        previous = self.server_pid
        result = getattr(self, step)()
        self.durations[step] = result.duration_s
        self.server_pid = result.server_pid
        print(f"pipeline run '{step}': {result.duration_s:.1f} s, server {result.server} ({result.server_pid})")
        tables = {name: lp.read_table(self.build, name) for name in TABLES}
        return Stage(result, before, lp.pipeline_summary(self.build), tables, lp.server_pids(self.build),
                     previous, ingested_before)  # fmt: skip

    def run(self, full_refresh: bool = False) -> lp.PipelineRun:
        result = lp.run_pipeline(PIPELINE_DIR, source_path=self.source, build_dir=self.build, full_refresh=full_refresh)
        assert set(result.flows) == {
            "bronze_events",
            "silver_events",
            "silver_quarantine",
            "gold_rate_by_region_year",
            "gold_top_countries_latest",
            "gold_gender_comparison",
            "gold_quarantine_by_rule",
            "gold_aggregate_rates",
        }
        assert set(result.flows.values()) == {"COMPLETED"}
        # each flow starts only once the flows it reads from have completed (see medallion's docstring:
        # withColumn over an existing table silently broke this on every run after the first)
        events = [(flow, state) for _, flow, state in result.timeline]
        for flow, upstreams in UPSTREAM.items():
            for upstream in upstreams:
                assert events.index((upstream, "COMPLETED")) < events.index((flow, "STARTING")), (flow, upstream)
        return result

    # --- the four runs ---
    def first(self) -> lp.PipelineRun:
        """Notebook 00's warm-up and the first run start the build folder's server at the same time."""
        assert lp.warm_up_pipeline_server(self.build, pipeline_dir=PIPELINE_DIR, echo=None)
        day = self.source / "ingestion_date=2026" / "11" / "26"
        twin = {"Country": "Mali", "Country_Code": "MLI", "Region": "Sub-Saharan Africa", "Year": "2019"}
        twin["Child_Labor_Rate_Percent"] = "30.0"
        write_lines(
            day / "salud-firehose-tos3-1-2026-11-26-01-00-00-aaaa",
            [
                rec("evt-a1"),
                rec("evt-a2", Gender=" Boys ", Child_Labor_Rate_Percent="40,5"),
                rec("evt-a3", Gender="girls"),
                rec("twin-1", **twin),  # identical CSV rows, different events: both stay
                rec("twin-2", **twin),
                rec("evt-bad-year", Year="N/A"),
                bad_marker("evt-marker"),
                rec("evt-a1"),  # redelivered in the same file
            ],
        )
        write_lines(
            day / "salud-firehose-tos3-1-2026-11-26-01-05-00-bbbb.gz",
            [
                rec("evt-b1", Country="Peru", Country_Code="PER", Region="Latin America", Year="2018",
                    Child_Labor_Rate_Percent="20.0"),  # fmt: skip
                rec("evt-a2"),  # redelivered in another (gzip) file
            ],
            gz=True,
        )
        write_lines(day / "someone-dropped-a-csv.csv", ["Country,Year", "", "Chad,2015"])
        return self.run()

    def no_new_data(self) -> lp.PipelineRun:
        return self.run()

    def new_file(self) -> lp.PipelineRun:
        write_lines(
            self.source / "ingestion_date=2026" / "11" / "27" / "salud-firehose-tos3-1-2026-11-27-09-00-00-cccc",
            [
                rec("evt-c1", Country="India", Country_Code="IND", Region="South Asia", Year="2016"),
                rec("evt-c2", Country="India", Country_Code="IND", Region="South Asia", Year="2016", Gender="Male"),
                rec("evt-a1"),  # a late redelivery of an event loaded in the first run
                rec("evt-c3", Child_Labor_Rate_Percent="250"),
            ],
        )
        return self.run()

    def full_refresh(self) -> lp.PipelineRun:
        return self.run(full_refresh=True)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, pipeline_builds):
    """The run sequence of one build folder (and landing folder); its Spark Connect server is stopped
    at the end (no JVM left behind)."""
    base = tmp_path_factory.mktemp("e2e")
    sequence = Sequence(pipeline_builds(base / "build"), base / "external_location" / "bronze")
    yield sequence
    lp.stop_pipeline_server(sequence.build)
    assert lp.server_pids(sequence.build) == []
    print("pipeline run durations:", {k: round(v, 1) for k, v in sequence.durations.items()})


def test_e2e_first_run(e2e):
    first = e2e.stage("first")
    assert first.servers == [first.result.server_pid]
    # the warm-up and the run asked for the server together: one started it, the other waited and reused it
    logs = lp.lakehouse_dir(e2e.build) / "logs"
    warm_up = wait_until(lambda: [p.read_text() for p in logs.glob("warm-up-*.log") if "warm-up done" in p.read_text()],
                         "the warm-up to finish")[0]  # fmt: skip
    said = lp.SERVER_LINE.search(next(line for line in warm_up.splitlines() if lp.SERVER_LINE.search(line)))
    assert int(said.group(2)) == first.result.server_pid
    assert {said.group(1), first.result.server} == {"started", "reused"}

    summary = first.after
    assert summary["bronze_rows"] == 8 + 2 + 2  # every non-blank line, duplicates included
    silver = first.tables["silver_events"]
    assert sorted(silver["event_id"]) == ["evt-a1", "evt-a2", "evt-a3", "evt-b1", "twin-1", "twin-2"]
    quarantine = first.tables["silver_quarantine"]
    assert len(quarantine) == 4  # bad year, producer marker, two CSV lines
    rules = {(row.event_id, tuple(row.broken_rules)) for row in quarantine.itertuples() if row.event_id}
    assert rules == {("evt-bad-year", ("year_is_integer",)), ("evt-marker", ("record_parsed",))}
    csv_lines = quarantine[quarantine["event_id"].isna()]
    assert sorted(csv_lines["_raw_line"]) == ["Chad,2015", "Country,Year"]
    assert all(list(r) == ["record_parsed"] for r in csv_lines["broken_rules"])
    assert summary["quarantine_by_rule"] == {"record_parsed": 3, "year_is_integer": 1}

    # silver + quarantine == distinct event ids + lines without one
    bronze = first.tables["bronze_events"]
    expected = bronze["event_id"].dropna().nunique() + bronze["event_id"].isna().sum()
    assert summary["silver_rows"] + summary["quarantine_rows"] == expected == 10

    # types and normalisation made it to the table
    row = silver.set_index("event_id").loc["evt-a2"]
    assert (row["Gender"], row["Child_Labor_Rate_Percent"]) == ("Male", 40.5)
    assert silver.set_index("event_id").loc["evt-a3", "Gender"] == "Female"
    assert str(silver["Year"].dtype) == "Int32"  # pandas' nullable integer: a missing Year is <NA>, not 2018.0
    assert str(silver["Child_Labor_Rate_Percent"].dtype) == "float64"
    assert str(silver["produced_at"].dtype).startswith("datetime64")
    assert silver["_source_file"].str.contains("ingestion_date=2026/11/26").all()

    gold = summary["gold_tables"]
    assert (
        gold["gold_rate_by_region_year"] == 3
    )  # (Sub-Saharan Africa, 2015), (.., 2019), (Latin America, 2018)
    top = first.tables["gold_top_countries_latest"].sort_values("rank")
    assert list(top["Country_Code"]) == ["TCD", "MLI", "PER"]


def test_e2e_second_run_without_new_data_adds_nothing(e2e):
    second = e2e.stage("no_new_data")
    assert (second.result.server, second.result.server_pid) == ("reused", second.previous_server)
    assert_same_tables(second.after, second.before)


def assert_same_tables(after: dict, before: dict) -> None:
    for key in ("bronze_rows", "silver_rows", "quarantine_rows", "quarantine_by_rule", "gold_tables"):
        assert after[key] == before[key], key


def test_e2e_new_file_flows_through_alone(e2e):
    third = e2e.stage("new_file")
    before, after = third.before, third.after
    assert (third.result.server, third.result.server_pid) == ("reused", third.previous_server)
    assert after["bronze_rows"] == before["bronze_rows"] + 4
    assert after["silver_rows"] == before["silver_rows"] + 2
    assert after["quarantine_rows"] == before["quarantine_rows"] + 1
    assert after["quarantine_by_rule"]["rate_in_range"] == 1

    bronze = third.tables["bronze_events"]
    new = bronze[bronze["_ingested_at"] > third.ingested_before]
    assert len(new) == 4, "only the new file's lines are ingested again"
    assert new["_source_file"].str.endswith("cccc").all()
    silver = third.tables["silver_events"]
    assert (silver["event_id"] == "evt-a1").sum() == 1
    regions = third.tables["gold_rate_by_region_year"]
    assert ("South Asia", 2016) in set(zip(regions["Region"], regions["Year"], strict=True))


def test_e2e_full_refresh_rebuilds_the_same_tables(e2e):
    fourth = e2e.stage("full_refresh")
    assert (fourth.result.server, fourth.result.server_pid) == ("reused", fourth.previous_server)
    assert_same_tables(fourth.after, fourth.before)
    bronze = fourth.tables["bronze_events"]
    assert (bronze["_ingested_at"] > fourth.ingested_before).all(), "every file was read again"


def test_one_run_at_a_time_per_build_folder(tmp_path):
    with lp.build_lock(tmp_path / "build"):
        with pytest.raises(lp.PipelineError, match="another pipeline run is using"):
            lp.run_pipeline(
                PIPELINE_DIR, source_path=tmp_path / "src", build_dir=tmp_path / "build", echo=None
            )
    with lp.build_lock(tmp_path / "build"):  # released again
        pass


def test_run_pipeline_timeout_kills_the_run_and_says_so(tmp_path, pipeline_builds):
    with pytest.raises(lp.PipelineError, match="timed out after 3 s"):
        lp.run_pipeline(
            PIPELINE_DIR, source_path=tmp_path / "src", build_dir=pipeline_builds(tmp_path / "build"), timeout=3,
            echo=None,
        )
    assert lp.server_pids(tmp_path / "build") == []


# --- the server's bookkeeping, on stand-in processes (no JVM) --------------------------------------------
@pytest.fixture
def fake_servers():
    """Start processes that look like a build folder's server (class and marker on the command line)."""
    started: list[subprocess.Popen] = []

    def start(build_dir: Path) -> subprocess.Popen:
        lakehouse = lp.lakehouse_dir(build_dir).resolve()
        lakehouse.mkdir(parents=True, exist_ok=True)
        args = [f"-D{lp.SERVER_MARKER}={lakehouse}", lp.SERVER_CLASS]
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", *args])
        started.append(process)
        wait_until(lambda: process.pid in lp.server_pids(build_dir), "the stand-in server to be found by its marker")
        return process

    yield start
    stop_processes(started)


def write_discovery(build_dir: Path, pid: int) -> Path:
    discovery = lp.discovery_path(build_dir)
    discovery.parent.mkdir(parents=True, exist_ok=True)
    discovery.write_text(json.dumps({"host": "localhost", "port": 1, "token": "t", "pid": pid}))
    return discovery


def test_server_conf_marks_the_java_command_line(tmp_path):
    _, static = lp.spark_settings(source_path=tmp_path / "src", build_dir=tmp_path)
    conf = lp.server_conf(static, lp.lakehouse_dir(tmp_path))
    lakehouse = lp.lakehouse_dir(tmp_path).resolve()
    assert f'"-D{lp.SERVER_MARKER}={lakehouse}"' in conf["spark.driver.extraJavaOptions"]
    assert conf["spark.driver.extraJavaOptions"].startswith(static["spark.driver.extraJavaOptions"])
    assert {k: v for k, v in conf.items() if k != "spark.driver.extraJavaOptions"}.items() >= {
        k: v for k, v in static.items() if k != "spark.driver.extraJavaOptions"
    }.items()


def test_stop_pipeline_server_stops_only_that_build_folders_server(tmp_path, fake_servers):
    assert lp.stop_pipeline_server(tmp_path / "none") is False  # nothing to stop: fine
    assert not (tmp_path / "none").exists()
    mine, other = fake_servers(tmp_path / "a"), fake_servers(tmp_path / "b")
    discovery = write_discovery(tmp_path / "a", mine.pid)
    assert lp.server_pids(tmp_path / "a") == [mine.pid]
    assert lp.stop_pipeline_server(tmp_path / "a") is True
    assert mine.wait(timeout=DEADLINE) == -signal.SIGTERM
    assert not discovery.exists()
    assert other.poll() is None and lp.server_pids(tmp_path / "b") == [other.pid]
    assert lp.stop_pipeline_server(tmp_path / "a") is False


def test_reset_pipeline_stops_the_server_before_deleting(tmp_path, fake_servers):
    server = fake_servers(tmp_path)
    lp.reset_pipeline(tmp_path)
    assert server.wait(timeout=DEADLINE) == -signal.SIGTERM
    assert not lp.lakehouse_dir(tmp_path).exists()


def test_in_process_runs_stop_the_server_first_reusing_runs_keep_it(tmp_path, fake_servers, monkeypatch):
    """An in-process run's JVM cannot open the Derby metastore while the server holds it (ERROR XSDB6
    "Another instance of Derby may have already booted the database"): it stops the server first."""
    build = tmp_path / "build"
    server = fake_servers(build)
    seen: list[dict] = []

    def fake_run(command, env, *args):  # instead of the run subprocess
        mark = lp.server_dir(build) / lp.RUN_MARK
        seen.append({"alive": server.poll() is None, "env": env.get(lp.SERVER_ENV), "mark": mark.read_text()})
        raise lp.PipelineError("not run")

    monkeypatch.setattr(lp_runner, "_run_subprocess", fake_run)
    for reuse in (True, False):
        with pytest.raises(lp.PipelineError, match="not run"):
            lp.run_pipeline(PIPELINE_DIR, source_path=tmp_path / "src", build_dir=build, reuse_server=reuse)
    lakehouse = str(lp.lakehouse_dir(build).resolve())
    assert seen[0] == {"alive": True, "env": lakehouse, "mark": f"running {os.getpid()}"}
    assert (lp.server_dir(build) / lp.RUN_MARK).read_text() == "idle"
    assert seen[1] == {"alive": False, "env": None, "mark": "idle"}
    assert server.wait(timeout=DEADLINE) == -signal.SIGTERM


def test_warm_up_does_nothing_where_it_has_nothing_to_do(tmp_path, fake_servers, monkeypatch):
    assert lp.warm_up_pipeline_server(tmp_path / "aws", target="aws") is False
    assert not (tmp_path / "aws").exists()
    monkeypatch.setenv(WARM_UP_ENV, "0")
    assert lp.warm_up_pipeline_server(tmp_path / "off") is False
    assert not (tmp_path / "off").exists()
    monkeypatch.delenv(WARM_UP_ENV)
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    assert lp.warm_up_pipeline_server(tmp_path / "dbr") is False
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION")
    fake_servers(tmp_path / "running")  # its server runs already
    assert lp.warm_up_pipeline_server(tmp_path / "running") is False
    starting = lp.discovery_path(tmp_path / "starting")
    starting.parent.mkdir(parents=True)
    with lp_server._start_lock(starting, wait=False):  # a start is in progress (a run's, or another warm-up's)
        assert lp_server.start_in_progress(starting)
        assert lp.warm_up_pipeline_server(tmp_path / "starting") is False
    assert not lp_server.start_in_progress(starting)
    said: list[str] = []
    (tmp_path / "file").write_text("a file where the build folder should be")
    assert lp.warm_up_pipeline_server(tmp_path / "file" / "build", echo=said.append) is False
    assert said and said[0].startswith(f"cannot write to the build folder {tmp_path / 'file' / 'build'}")


def test_stopping_waits_for_a_server_still_starting(tmp_path, fake_servers):
    """`kinesis-lab down` or the end of a demo while notebook 00's warm-up is still starting the
    server: the stop waits for the start, then stops what it started (nothing left running)."""
    discovery = lp.discovery_path(tmp_path)
    discovery.parent.mkdir(parents=True)
    started: list = []

    def slow_start() -> None:  # what a start does with the lock held: the JVM appears a while later
        with lp_server._start_lock(discovery, wait=False):
            holding.set()
            time.sleep(1.0)
            started.append(fake_servers(tmp_path))
            write_discovery(tmp_path, started[0].pid)

    holding = threading.Event()
    starter = threading.Thread(target=slow_start)
    starter.start()
    assert holding.wait(timeout=DEADLINE)
    assert lp.server_pids(tmp_path) == []  # nothing to stop yet...
    assert lp.stop_pipeline_server(tmp_path) is True  # ...but the stop waited for it
    starter.join(timeout=DEADLINE)
    assert started[0].wait(timeout=DEADLINE) == -signal.SIGTERM
    assert lp.server_pids(tmp_path) == [] and not discovery.exists()


@pytest.fixture
def watchdog_looks(monkeypatch):
    """How many times a watchdog has looked whether a run is going on."""
    looks = []
    busy = lp_server._busy

    def counted(discovery):
        looks.append(discovery)
        return busy(discovery)

    monkeypatch.setattr(lp_server, "_busy", counted)
    return looks


def test_watchdog_stops_an_idle_server_but_not_a_busy_one(tmp_path, fake_servers, watchdog_looks):
    server = fake_servers(tmp_path)
    discovery = write_discovery(tmp_path, server.pid)
    with lp_server.marked_run(tmp_path):  # a run is going on: the watchdog waits
        watchdog = threading.Thread(
            target=lp_server.watch_server, args=(discovery.parent.parent, server.pid, 0.3, 0.05)
        )
        watchdog.start()
        wait_until(lambda: len(watchdog_looks) >= 5, "the watchdog to look five times")  # ~0.25 s, busy
        assert server.poll() is None
    watchdog.join(timeout=DEADLINE)  # idle for 0.3 s after the run: stopped, and forgotten
    assert not watchdog.is_alive(), f"the watchdog did not stop the idle server within {DEADLINE:.0f} s"
    assert server.wait(timeout=DEADLINE) == -signal.SIGTERM
    assert not discovery.exists()


def test_watchdog_stops_a_server_whose_lakehouse_was_deleted(tmp_path, fake_servers, watchdog_looks):
    server = fake_servers(tmp_path)
    write_discovery(tmp_path, server.pid)
    lakehouse = lp.lakehouse_dir(tmp_path).resolve()
    watchdog = threading.Thread(target=lp_server.watch_server, args=(lakehouse, server.pid, 0, 0.05))
    watchdog.start()
    wait_until(lambda: len(watchdog_looks) >= 5, "the watchdog to look five times")
    assert server.poll() is None  # idle timeout 0: never stopped for idleness
    import shutil

    shutil.rmtree(lakehouse)  # e.g. `make clean` or a new demo run, without stopping the server
    watchdog.join(timeout=DEADLINE)
    assert not watchdog.is_alive(), f"the watchdog did not stop the server within {DEADLINE:.0f} s"
    assert server.wait(timeout=DEADLINE) == -signal.SIGTERM
    assert not lakehouse.exists(), "the watchdog must not recreate the folder"


def test_a_server_that_does_not_answer_is_detected(tmp_path):
    import grpc

    with socket.socket() as silent:  # accepts connections (kernel backlog) but never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        assert lp_server._answers("127.0.0.1", silent.getsockname()[1], timeout=1.0) is False
        assert time.monotonic() - started < DEADLINE, "it waited for ever instead of giving up after 1 s"
    server = grpc.server(__import__("concurrent.futures").futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert lp_server._answers("127.0.0.1", port, timeout=5.0) is True
    finally:
        server.stop(None)


LISTENER = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(600)"


def start_listening_server(lakehouse: Path, discovery: Path, port: int, servers: list[subprocess.Popen]) -> str:
    """What pyspark's start does, with a stand-in: a process marked as the lakehouse's server listening on ``port``,
    recorded in ``discovery`` (and appended to ``servers``); returns its url."""
    argv = [sys.executable, "-c", LISTENER, str(port), f"-D{lp.SERVER_MARKER}={lakehouse}", lp.SERVER_CLASS]
    servers.append(subprocess.Popen(argv, stderr=subprocess.DEVNULL))
    discovery.write_text(json.dumps({"host": "127.0.0.1", "port": port, "token": "t", "pid": servers[-1].pid}))
    return f"sc://127.0.0.1:{port}"


def test_listens_on_tells_which_process_holds_a_listening_port(tmp_path):
    with socket.socket() as mine:
        mine.bind(("127.0.0.1", 0))
        mine.listen()
        port = mine.getsockname()[1]
        assert procs.listens_on(os.getpid(), port) is True
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        try:
            assert procs.listens_on(child.pid, port) is False  # alive, but the port is ours
            started = time.monotonic()
            child.kill()
            assert lp_server.owns_its_port(child.pid, port, timeout=DEADLINE) is False  # died: no wait
            assert time.monotonic() - started < DEADLINE
        finally:
            stop_processes([child])
    assert procs.listens_on(os.getpid(), port) is False  # closed


def test_a_start_whose_port_was_taken_is_retried_on_a_new_port(tmp_path, monkeypatch, capsys):
    """The port ``stack.free_port()`` picked can be taken before the JVM binds it: the JVM dies
    (BindException) while pyspark, seeing something listen there, says started. The start is checked
    by who owns the port, and retried on a new one."""
    lakehouse = lp.lakehouse_dir(tmp_path).resolve()
    discovery = lp.discovery_path(tmp_path)
    discovery.parent.mkdir(parents=True)
    thief = socket.socket()
    thief.bind(("127.0.0.1", 0))
    thief.listen()
    taken = thief.getsockname()[1]
    ports, free_port = iter([taken]), stack.free_port
    monkeypatch.setattr(stack, "free_port", lambda: next(ports, None) or free_port())
    servers: list[subprocess.Popen] = []

    def start(master, opts):  # what pyspark's start does: launch the server, record it, return its url
        return start_listening_server(lakehouse, discovery, int(opts["spark.local.connect.server.port"]), servers)

    monkeypatch.setattr("pyspark.sql.connect.local_server.reuse_or_start_local_connect_server", start)
    try:
        url = lp_server._reuse_or_start({}, lakehouse, discovery)
        assert len(servers) == 2 and servers[0].wait(timeout=DEADLINE) != 0  # the first could not bind
        port = int(url.rsplit(":", 1)[1])
        assert port != taken and procs.listens_on(servers[1].pid, port)
        state = json.loads((discovery.parent / lp_server.SERVER_STATE).read_text())
        assert state["pid"] == servers[1].pid
        assert f"did not bind port {taken} (another process holds it); attempt 1 of 3" in capsys.readouterr().out
    finally:
        thief.close()
        stop_processes(servers)


def test_a_server_killed_between_runs_is_forgotten_and_a_new_one_started(tmp_path, monkeypatch, capsys, fake_servers):
    """The discovery file names a server SIGKILLed since the last run (no process left): the next run says so,
    drops the dead server's files and starts a new one instead of trying to reuse it. The real replacement (a
    new JVM that finds the tables) is tests/test_pipeline_faults.py's server killed mid-run."""
    lakehouse = lp.lakehouse_dir(tmp_path).resolve()
    dead = fake_servers(tmp_path)
    discovery = write_discovery(tmp_path, dead.pid)
    (discovery.parent / lp_server.SERVER_STATE).write_text(json.dumps({"pid": dead.pid, "fingerprint": "x"}))
    (discovery.parent / "spark-root-connect-1.pid").write_text(str(dead.pid))
    dead.kill()  # SIGKILL: nothing cleans up after it
    dead.wait(timeout=DEADLINE)
    left_at_start: list[list[str]] = []
    servers: list[subprocess.Popen] = []

    def start(master, opts):  # what pyspark's start does: launch the server, record it, return its url
        left_at_start.append(sorted(p.name for p in discovery.parent.iterdir() if not p.name.endswith(".lock")))
        return start_listening_server(lakehouse, discovery, int(opts["spark.local.connect.server.port"]), servers)

    monkeypatch.setattr("pyspark.sql.connect.local_server.reuse_or_start_local_connect_server", start)
    try:
        lp_server._reuse_or_start({}, lakehouse, discovery)
        assert f"Spark Connect server: pid {dead.pid} is gone, starting a new one" in capsys.readouterr().out
        assert left_at_start == [[]]  # its discovery, pid and state files: forgotten before the start
        assert len(servers) == 1 and lp.server_pids(tmp_path) == [servers[0].pid]
        assert json.loads((discovery.parent / lp_server.SERVER_STATE).read_text())["pid"] == servers[0].pid
    finally:
        stop_processes(servers)


def test_a_killed_run_s_half_written_checkpoint_files_are_dropped(tmp_path):
    """A run killed while Spark wrote ``offsets/0`` leaves ``.0.<uuid>.tmp``: the next run's flow, at batch 0,
    would refuse the folder (STATE_STORE_CHECKPOINT_LOCATION_NOT_EMPTY). Only those files go."""
    flow = tmp_path / "lakehouse" / "storage" / "_checkpoints" / "spark_catalog" / "silver" / "q" / "q" / "0"
    kept = [flow / "metadata", flow / "offsets" / "0", flow / "commits" / "0", flow / "sources" / "0" / "0",
            flow / "sources" / "0" / ".0.crc", flow / "state" / ".1.delta.tmp"]
    partial = [flow / "offsets" / ".1.42c269d6-12a5-4c04-9c8f-a931afee0f90.tmp",
               flow / "commits" / ".1.0b8e7f4e-0f1d-4d52-9a77-3c1d1b2a9f10.tmp"]
    for path in kept + partial:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    assert sorted(lp_runner.drop_partial_checkpoint_writes(tmp_path / "lakehouse")) == sorted(partial)
    assert [p for p in kept if p.exists()] == kept and not [p for p in partial if p.exists()]
    assert lp_runner.drop_partial_checkpoint_writes(tmp_path / "empty") == []  # no checkpoints yet
