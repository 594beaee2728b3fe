"""Stopping the service (SIGKILL, SIGTERM) neither loses nor repeats records.

Runs on a second stack of its own (moto + service), so the session's shared stack is never stopped.
Nothing here depends on how fast the machine is: each step waits for the service's checkpoints (or
for it to have polled), and the records that must be caught in the buffer sit under a 900 s
buffering interval while the service is stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from helpers import clients_for, stop_processes
from test_local_firehose_stack import (
    checkpointed,
    delivery_key,
    lines_of,
    make_delivery_stream,
    make_source,
    put_lines,
    read_objects,
    wait_for_a_whole_poll,
    wait_for_delivery,
)
from waiting import LogWatch

from kinesis_lab.local import stack

REGION = "us-east-1"


def start_service(state_dir, endpoint) -> subprocess.Popen:
    """The service as ``stack.up`` starts it: same --state-dir, environment and log file."""
    env = {**os.environ, **stack.local_env(endpoint, REGION), "PYTHONUNBUFFERED": "1"}
    with open(state_dir / "logs" / "firehose.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "kinesis_lab.local.firehose", "--state-dir", str(state_dir / "firehose")],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip


def set_interval(clients, name: str, seconds: int) -> str:
    """update_destination: a new buffering interval (a new version); returns the version id."""
    firehose = clients("firehose")
    desc = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    firehose.update_destination(
        DeliveryStreamName=name, CurrentDeliveryStreamVersionId=desc["VersionId"],
        DestinationId=desc["Destinations"][0]["DestinationId"],
        ExtendedS3DestinationUpdate={"BufferingHints": {"IntervalInSeconds": seconds, "SizeInMBs": 1}},
    )  # fmt: skip
    return firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]["VersionId"]


@pytest.fixture
def own_stack(private_stacks, tmp_path):
    state, _ = stack.up(private_stacks(tmp_path), REGION)
    clients = clients_for(state.endpoint)  # never the shared stack's endpoint
    started: list[subprocess.Popen] = []
    try:
        yield state, tmp_path, clients, started
    finally:
        stop_processes(started, timeout=5)  # only the processes this test started
        stack.down(tmp_path)


def test_sigkill_then_restart_loses_and_repeats_nothing_and_sigterm_flushes(own_stack):
    state, state_dir, clients, started = own_stack
    bucket, stream, name = "restart-bucket", "restart-stream", "restart"
    log = LogWatch(state_dir / "logs" / "firehose.log")
    arn = make_source(clients, stream, bucket)
    put_lines(clients, stream, "before", 20)
    make_delivery_stream(clients, name, arn, bucket, compression="GZIP", buffer_interval_seconds=2)

    # 1. a first batch is delivered and checkpointed
    sent = put_lines(clients, stream, "a", 1000)
    assert len(lines_of(wait_for_delivery(clients, state_dir, name, stream, sent, bucket))) == 1000
    assert checkpointed(state_dir)[delivery_key(clients, name)]  # persisted per shard

    # 2. more records are read into the buffer (a 900 s interval now: no flush), then the service is
    #    killed before it writes them
    version = set_interval(clients, name, 900)
    log.wait_for(f"delivery stream {name} now at version {version}")
    b = put_lines(clients, stream, "b", 1000, start=1000)
    wait_for_a_whole_poll(clients, state_dir, "killed")  # it has read them
    os.kill(state.firehose_pid, signal.SIGKILL)
    try:
        os.waitpid(state.firehose_pid, 0)  # our child (stack.up ran here): reap it
    except ChildProcessError:
        pass  # already reaped by subprocess' own clean-up
    assert sorted(lines_of(read_objects(clients, bucket))) == sorted(sent)  # the buffer died with it
    sent += b

    # 3. records put while it is down, then a restart with the same state folder (and interval 2 s)
    c = put_lines(clients, stream, "c", 1000, start=2000)
    sent += c
    set_interval(clients, name, 2)
    started.append(start_service(state_dir, state.endpoint))
    delivered = lines_of(wait_for_delivery(clients, state_dir, name, stream, sent, bucket))
    assert sorted(delivered) == sorted(sent)  # none lost, none twice, no "before" record

    # 4. SIGTERM delivers what is buffered before exiting, without waiting for the (900 s) interval
    version = set_interval(clients, name, 900)
    log.wait_for(f"delivery stream {name} now at version {version}")
    sent += put_lines(clients, stream, "d", 500, start=3000)
    wait_for_a_whole_poll(clients, state_dir, "stopped")  # read into the buffer, not written
    started[0].send_signal(signal.SIGTERM)
    assert started[0].wait(timeout=120) == 0
    assert sorted(lines_of(read_objects(clients, bucket))) == sorted(sent)

    # 5. one more pass (--once) finds nothing new to deliver: the checkpoints were kept
    once = subprocess.run(
        [sys.executable, "-m", "kinesis_lab.local.firehose", "--state-dir", str(state_dir / "firehose"), "--once"],
        env={**os.environ, **stack.local_env(state.endpoint, REGION)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert once.returncode == 0, once.stdout + once.stderr
    assert "delivered" not in once.stdout
    objects = read_objects(clients, bucket)
    assert sorted(lines_of(objects)) == sorted(sent)

    text = (state_dir / "logs" / "firehose.log").read_text()
    assert text.count(" INFO delivered s3://restart-bucket/") == len(objects)
