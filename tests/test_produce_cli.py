"""`kinesis-lab produce` ends every failure in one line of what went wrong and what to do, exit 1, and the
figures of what was sent before it stopped — never a traceback."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from kinesis_lab.cloud.dataset import COLUMNS, SAMPLE_PATH
from kinesis_lab.cloud.producer import SendInterrupted, produce_file
from kinesis_lab.local import stack

CLI = [sys.executable, "-m", "kinesis_lab.course.cli"]


@pytest.fixture(scope="module")
def lab_env(tmp_path_factory, private_stacks):
    state_dir = private_stacks(tmp_path_factory.mktemp("produce-cli") / "state")
    stack.up(state_dir, "us-east-1")
    env = {**os.environ, "LAB_STATE_DIR": str(state_dir), "LAB_TARGET": "local",
           "LAB_BUILD_DIR": str(state_dir.parent / "build")}
    env.pop("AWS_ENDPOINT_URL", None)
    yield env
    stack.down(state_dir)


def produce(env, *args):
    return subprocess.run([*CLI, "produce", *args], capture_output=True, text=True, env=env, timeout=300)


def test_a_wrong_header_is_one_line_and_nothing_is_sent(lab_env, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Country,Year\nNepal,2010\n", encoding="utf-8")
    done = produce(lab_env, "--dataset", str(bad))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("kinesis-lab: error: bad.csv: the header does not match the course's columns: ")
    assert done.stderr.strip().endswith("(nothing was sent)")


def test_a_missing_file_is_one_line(lab_env, tmp_path):
    done = produce(lab_env, "--dataset", str(tmp_path / "nope.csv"))
    assert done.returncode == 1
    assert done.stderr.strip() == f"kinesis-lab: error: CSV file not found: {tmp_path / 'nope.csv'} (nothing was sent)"


def test_a_missing_stream_says_so_with_the_figures(lab_env):
    done = produce(lab_env, "--dataset", str(SAMPLE_PATH), "--stream", "no-such-stream")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith(
        "kinesis-lab: error: Kinesis refused PutRecords on stream 'no-such-stream': ResourceNotFoundException: ")
    assert last.endswith("sending the file again is safe (silver keeps each event_id once).") and ".." not in last
    figures = dict(line.split(None, 1) for line in done.stdout.splitlines() if line.strip())
    assert figures["records_sent"] == "0" and figures["stream_name"] == "no-such-stream"


def test_simulated_throttling_is_resent_until_every_record_is_in(lab_env):
    endpoint = stack.read_state(Path(lab_env["LAB_STATE_DIR"])).endpoint
    kinesis = boto3.client("kinesis", region_name="us-east-1", endpoint_url=endpoint,
                           aws_access_key_id="x", aws_secret_access_key="x")
    kinesis.create_stream(StreamName="cli-throttled", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    done = produce(lab_env, "--dataset", str(SAMPLE_PATH), "--stream", "cli-throttled",
                   "--simulated-failure-rate", "0.3", "--json")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["records_sent"] == 540 and figures["records_retried"] == figures["failed_entries"] > 0
    assert "simulated_failure_rate" not in figures
    assert not (Path(lab_env["LAB_BUILD_DIR"]) / "run-summary.json").exists()  # another stream: not this run's


def test_sending_to_the_labs_stream_records_the_run_as_04_does(lab_env):
    from kinesis_lab.cloud.summary import read_summary

    endpoint = stack.read_state(Path(lab_env["LAB_STATE_DIR"])).endpoint
    kinesis = boto3.client("kinesis", region_name="us-east-1", endpoint_url=endpoint,
                           aws_access_key_id="x", aws_secret_access_key="x")
    kinesis.create_stream(StreamName="jm-demo-kinesis-lab", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    done = produce(lab_env, "--dataset", str(SAMPLE_PATH), "--json")
    assert done.returncode == 0, done.stderr
    summary = read_summary(Path(lab_env["LAB_BUILD_DIR"]))
    assert summary["records_sent"] == json.loads(done.stdout)["records_sent"] == 540
    assert summary["dataset_path"] == str(SAMPLE_PATH.resolve()) and summary["dataset"] == SAMPLE_PATH.name


def test_a_connection_that_stays_down_stops_with_what_was_sent(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kinesis = boto3.client("kinesis", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
                           aws_access_key_id="x", aws_secret_access_key="x",
                           config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2))
    path = tmp_path / "rows.csv"
    path.write_text(",".join(COLUMNS) + "\nNepal,NPL,Asia,2010,20.5,1.5,Total,5-17 years\n", encoding="utf-8")
    with pytest.raises(SendInterrupted) as err:
        produce_file(path, stream_name="s", kinesis=kinesis, progress=False)
    assert str(err.value).startswith("the connection to Kinesis failed and stayed down (")
    assert err.value.result.records_sent == 0 and err.value.result.source_file == "rows.csv"
