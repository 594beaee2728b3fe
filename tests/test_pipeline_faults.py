"""The local pipeline survives the stack's faults (issue #15), on one build folder and a private stack:

1. the bucket mirror follows the bucket: after `down` + `up` (a new, empty moto) and the bucket made
   again with new records, the mirror drops the earlier stack's objects and the next run rebuilds
   the tables from the new ones (bronze = what S3 holds, not old + new);
2. the Spark Connect server SIGKILLed in the middle of a run: the run stops within seconds saying
   so (not after the 15-minute timeout), and the next run starts a new server that finds the tables.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import boto3
import pytest
from helpers import stop_processes
from test_local_pipeline import PIPELINE_DIR, PREFIX, rec
from waiting import DEADLINE

from kinesis_lab.local import pipeline as lp
from kinesis_lab.local import stack
from kinesis_lab.local.pipeline import runner

REGION = "us-east-1"
BUCKET = "pipeline-faults-bucket"
DAY = "bronze/ingestion_date=2026/11/26/"


def s3_of(state: stack.StackState):
    return boto3.client(
        "s3", region_name=REGION, endpoint_url=state.endpoint,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def fill_bucket(state: stack.StackState, tag: str, objects: int, per_object: int) -> set[str]:
    """Create the bucket and put ``objects`` JSON-lines objects; returns the event ids."""
    s3 = s3_of(state)
    s3.create_bucket(Bucket=BUCKET)
    ids = set()
    for i in range(objects):
        lines = [rec(f"{tag}-{i}-{j}") for j in range(per_object)]
        ids |= {f"{tag}-{i}-{j}" for j in range(per_object)}
        s3.put_object(Bucket=BUCKET, Key=f"{DAY}stream-1-{tag}-{i}", Body=("\n".join(lines) + "\n").encode())
    return ids


def mirrored_files(mirror: lp.MirrorResult) -> list[str]:
    return sorted(p.name for p in mirror.source_dir.rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def lab(tmp_path_factory, private_stacks, pipeline_builds):
    base = tmp_path_factory.mktemp("pipeline-faults")
    lab = {"state_dir": private_stacks(base / "state"), "build": pipeline_builds(base / "build"), "facts": {}}
    yield lab
    lp.stop_pipeline_server(lab["build"])
    stack.down(lab["state_dir"])
    assert lp.server_pids(lab["build"]) == []


def run(lab, echo=None) -> lp.PipelineRun:
    return lp.run_pipeline(PIPELINE_DIR, source_path=lab["mirror"].source_dir, build_dir=lab["build"], echo=echo)


@pytest.fixture(scope="module")
def followed(lab):
    """A pipeline run on a first stack's bucket; then `down` + `up` (a new, empty moto), the bucket made
    again with other records, mirrored, and the pipeline run again. Returns what each step saw."""
    facts: dict = {}
    first, _ = stack.up(lab["state_dir"], REGION)
    facts["old_ids"] = fill_bucket(first, "old", objects=3, per_object=2)
    target = lp.external_location_dir(lab["build"])
    lab["mirror"] = lp.mirror_s3_prefix(s3_of(first), BUCKET, PREFIX, target, echo=None)
    facts["first_mirror"] = lab["mirror"]
    run(lab)
    facts["first_bronze_rows"] = lp.table_rows(lab["build"], lp.BRONZE_TABLE)

    stack.down(lab["state_dir"])  # moto's state is gone; the build folder stays
    second, started = stack.up(lab["state_dir"], REGION)
    facts["stacks"] = (first, second, started)
    facts["new_ids"] = fill_bucket(second, "new", objects=2, per_object=2)
    said: list[str] = []
    mirror = lp.mirror_s3_prefix(s3_of(second), BUCKET, PREFIX, target, echo=said.append)
    facts["mirror"], facts["said"], facts["mirrored_files"] = mirror, said, mirrored_files(mirror)
    facts["again"] = lp.mirror_s3_prefix(s3_of(second), BUCKET, PREFIX, target, echo=None)
    lab["mirror"] = mirror

    echoed: list[str] = []
    facts["result"], facts["echoed"] = run(lab, echo=echoed.append), echoed
    facts["bronze_ids"] = list(lp.read_table(lab["build"], lp.BRONZE_TABLE, ["event_id"])["event_id"])
    facts["silver_ids"] = set(lp.read_table(lab["build"], lp.SILVER_TABLE, ["event_id"])["event_id"])
    return facts


def test_the_mirror_and_the_tables_follow_a_new_local_stack(followed):
    f = followed
    assert f["first_mirror"].new_objects == 3
    assert f["first_bronze_rows"] == len(f["old_ids"]) == 6
    first, second, started = f["stacks"]
    assert "moto" in started and second.stack_id != first.stack_id and second.lost is None
    mirror = f["mirror"]
    assert (mirror.emptied, mirror.new_objects, mirror.total_objects) == (3, 2, 2)
    assert f["said"] == ["the mirror held 3 objects of an earlier bucket or local stack: deleted them first"]
    assert f["mirrored_files"] == ["stream-1-new-0", "stream-1-new-1"]
    again = f["again"]
    assert (again.emptied, again.new_objects, again.total_objects) == (0, 0, 2)  # still incremental

    result = f["result"]
    assert result.full_refresh and any("full refresh of every table" in line for line in f["echoed"])
    assert set(result.flows.values()) == {"COMPLETED"}
    assert sorted(f["bronze_ids"]) == sorted(f["new_ids"])  # 4 rows, what S3 holds: none of the old stack's
    assert f["silver_ids"] == f["new_ids"]


def test_a_spark_server_killed_mid_run_fails_the_run_fast_and_the_next_run_recovers(lab, followed):
    server_pid = followed["result"].server_pid  # the build folder's server, reused by the next run
    killed: dict = {}

    def echo(line: str) -> None:  # runs while the run goes on: kill the server as bronze starts
        if "bronze_events is STARTING" in line and not killed:
            [pid] = lp.server_pids(lab["build"])
            killed.update(pid=pid, at=time.monotonic())
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(lp.PipelineError) as err:
        run(lab, echo=echo)
    took = time.monotonic() - killed["at"]
    print(f"run stopped {took:.1f} s after the Spark server was killed")
    assert killed["pid"] == server_pid  # the reused server
    first_line = str(err.value).splitlines()[0]
    logs = lp.server_dir(lab["build"]) / "logs"
    assert first_line.startswith(f"the Spark server died (see its log {logs}")
    assert first_line.endswith("): run the cell again")
    assert took < DEADLINE, f"the run noticed only after {took:.0f} s (its timeout is {lp.DEFAULT_TIMEOUT} s)"
    assert lp.server_pids(lab["build"]) == []

    result = run(lab)  # "run the cell again": a new server (no clean shutdown: Derby recovers its metastore)
    assert result.server == "started" and result.server_pid != killed["pid"]
    assert lp.server_pids(lab["build"]) == [result.server_pid]
    assert set(result.flows.values()) == {"COMPLETED"}
    assert lp.table_rows(lab["build"], lp.BRONZE_TABLE) == 4  # the tables of before, found again: none doubled
    assert set(lp.read_table(lab["build"], lp.SILVER_TABLE, ["event_id"])["event_id"]) == followed["new_ids"]


def test_the_runner_watches_the_server_it_announced(tmp_path):
    """Without Spark: a stand-in run announces its server, then hangs (as the real client does when
    its server is gone); the wait ends as soon as that server process dies."""
    lakehouse = lp.lakehouse_dir(tmp_path).resolve()
    lakehouse.mkdir(parents=True)
    sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
    server = subprocess.Popen([*sleep, f"-D{lp.SERVER_MARKER}={lakehouse}", lp.SERVER_CLASS])
    hung_run = subprocess.Popen(sleep, start_new_session=True)
    try:
        threading.Timer(1.0, server.kill).start()
        began = time.monotonic()
        with pytest.raises(runner._ServerDied):
            runner._wait_watching_server(hung_run, 600, [("reused", server.pid)], lakehouse)
        assert time.monotonic() - began < DEADLINE and hung_run.poll() is None  # noticed, not the 600 s timeout
    finally:
        stop_processes((server, hung_run))
