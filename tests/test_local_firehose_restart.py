"""Stopping the service (SIGKILL, SIGTERM) neither loses nor repeats records.

Runs on a second stack of its own (moto + service), so the session's shared stack is never stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial

import boto3
import pytest
from test_local_firehose_stack import lines_of, make_delivery_stream, make_source, put_lines, wait_for_lines

from kinesis_lab import stack

pytestmark = pytest.mark.stack
REGION = "us-east-1"


def start_service(state_dir, endpoint) -> subprocess.Popen:
    """The service as ``stack.up`` starts it: same --state-dir, environment and log file."""
    env = {**os.environ, **stack.local_env(endpoint, REGION), "PYTHONUNBUFFERED": "1"}
    with open(state_dir / "logs" / "firehose.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "kinesis_lab.local_firehose", "--state-dir", str(state_dir / "firehose")],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip


def checkpoint_positions(state_dir) -> dict:
    path = state_dir / "firehose" / "checkpoints.json"
    return json.loads(path.read_text())["delivery_streams"] if path.exists() else {}


@pytest.fixture
def own_stack(tmp_path):
    state, _ = stack.up(tmp_path, REGION)
    session = boto3.Session(
        region_name=REGION,
        aws_access_key_id=stack.DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack.DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    clients = partial(session.client, endpoint_url=state.endpoint)  # never the shared stack's endpoint
    started: list[subprocess.Popen] = []
    try:
        yield state, tmp_path, clients, started
    finally:
        for proc in started:  # only the processes this test started
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
        stack.down(tmp_path)


def test_sigkill_then_restart_loses_and_repeats_nothing_and_sigterm_flushes(own_stack):
    state, state_dir, clients, started = own_stack
    bucket, stream, name = "restart-bucket", "restart-stream", "restart"
    arn = make_source(clients, stream, bucket)
    put_lines(clients, stream, "before", 20)
    make_delivery_stream(clients, name, arn, bucket, compression="GZIP", buffer_interval_seconds=2)

    # 1. a first batch is delivered and checkpointed
    sent = put_lines(clients, stream, "a", 1000)
    assert len(lines_of(wait_for_lines(clients, bucket, 1000, timeout=8))) == 1000
    assert checkpoint_positions(state_dir)  # persisted per shard

    # 2. more records are read into the buffer, then the service is killed before its next flush
    sent += put_lines(clients, stream, "b", 1000, start=1000)
    time.sleep(0.6)  # read within a poll (0.2 s); the flush is due 2 s after the first is read
    os.kill(state.firehose_pid, signal.SIGKILL)
    try:
        os.waitpid(state.firehose_pid, 0)  # our child (stack.up ran here): reap it
    except ChildProcessError:
        pass  # already reaped by subprocess' own clean-up
    assert len(lines_of(wait_for_lines(clients, bucket, 2000, timeout=0))) == 1000  # the buffer died with it

    # 3. records put while it is down, then a restart with the same state folder
    sent += put_lines(clients, stream, "c", 1000, start=2000)
    started.append(start_service(state_dir, state.endpoint))
    delivered = lines_of(wait_for_lines(clients, bucket, 3000, timeout=2 + 5))
    assert sorted(delivered) == sorted(sent)  # none lost, none twice, no "before" record

    # 4. SIGTERM delivers what is buffered before exiting, without waiting for the interval
    sent += put_lines(clients, stream, "d", 500, start=3000)
    time.sleep(0.8)
    started[0].send_signal(signal.SIGTERM)
    assert started[0].wait(timeout=8) == 0
    delivered = lines_of(wait_for_lines(clients, bucket, 3500, timeout=0))
    assert sorted(delivered) == sorted(sent)

    # 5. one more pass (--once) finds nothing new to deliver: the checkpoints were kept
    once = subprocess.run(
        [sys.executable, "-m", "kinesis_lab.local_firehose", "--state-dir", str(state_dir / "firehose"), "--once"],
        env={**os.environ, **stack.local_env(state.endpoint, REGION)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert once.returncode == 0, once.stdout + once.stderr
    assert "delivered" not in once.stdout
    assert sorted(lines_of(wait_for_lines(clients, bucket, 3500, timeout=0))) == sorted(sent)

    log = (state_dir / "logs" / "firehose.log").read_text()
    assert log.count(" INFO delivered s3://restart-bucket/") == len(
        wait_for_lines(clients, bucket, 0, timeout=0)
    )
