"""Plain helpers that several test modules share (fixtures are in conftest.py, waiting on a condition in
waiting.py): reading a Kinesis stream back, sessions on a stack of a test's own, processes a test
started or watches (from /proc), a fake clock, a well-formed record line, an AWS error's code."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path

import boto3
from botocore.exceptions import ClientError

from kinesis_lab.local import stack

REGION = "us-east-1"


# --- Kinesis -----------------------------------------------------------------------------------------
def read_shards(kinesis, stream: str) -> dict[str, list[dict]]:
    """Every record of every shard of ``stream`` (shard id -> its records in order, as get_records
    returns them), read from TRIM_HORIZON until a shard gives an empty page."""
    out: dict[str, list[dict]] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = out.setdefault(shard["ShardId"], [])
        while True:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            if not page["Records"]:
                break
            records += page["Records"]
            iterator = page["NextShardIterator"]
    return out


# --- a stack of a test's own -------------------------------------------------------------------------
def dummy_session() -> boto3.Session:
    """A session with the lab's dummy credentials (a test's own stack: not the shared one's settings)."""
    return boto3.Session(
        region_name=REGION,
        aws_access_key_id=stack.DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack.DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def clients_for(endpoint: str):
    """``clients(name)`` -> a boto3 client of the stack at ``endpoint`` (never the shared stack's)."""
    return partial(dummy_session().client, endpoint_url=endpoint)


# --- processes ---------------------------------------------------------------------------------------
def stop_processes(processes: Iterable[subprocess.Popen], timeout: float = 10) -> None:
    """Kill each of the processes a test started that still runs, and reap it."""
    for proc in processes:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=timeout)


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ...) of every
    process still there."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            yield int(entry.name), fields


def children_of(pid: int) -> list[int]:
    return [child for child, fields in proc_stats() if int(fields[1]) == pid]


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) members of a process group."""
    return [member for member, fields in proc_stats() if int(fields[2]) == pgid and fields[0] != "Z"]


# --- time ----------------------------------------------------------------------------------------------
class FakeClock:
    """A clock that moves only when a test sets ``now``."""

    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- records -------------------------------------------------------------------------------------------
ROW = {
    "Country": "Chad",
    "Country_Code": "TCD",
    "Region": "Sub-Saharan Africa",
    "Year": "2015",
    "Child_Labor_Rate_Percent": "38.2",
    "Estimated_Children_Millions": "2.41",
    "Gender": "Total",
    "Age_Group": "5-17 years",
}


def record_line(event_id: str | None, *, produced_at: str = "2026-11-26T01:02:03.123Z", **overrides) -> str:
    """One well-formed record as the producer writes it (a Firehose line without its newline): ROW, the
    event id, the source file and line, the time; an override (or an event id) of None leaves the field out."""
    fields = {
        **ROW,
        "event_id": event_id,
        "source_file": "child_labor.csv",
        "source_line": 2,
        "produced_at": produced_at,
        **overrides,
    }
    return json.dumps({k: v for k, v in fields.items() if v is not None})


# --- AWS errors ----------------------------------------------------------------------------------------
DENIED = {"AccessDenied", "403", "AccessDeniedException"}  # how moto and AWS say no (moto: code 403)


def error_code(call) -> str:
    """The error code of the ClientError ``call()`` raises ("" if it succeeds)."""
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return ""
