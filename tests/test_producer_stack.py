"""The producer against the local stack (real moto server): what lands in the stream, read back."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter

import boto3
import pytest
from botocore.config import Config
from helpers import read_shards

from kinesis_lab.cloud.dataset import COLUMNS, SAMPLE_PATH
from kinesis_lab.cloud.producer import DeliveryError, SendInterrupted, produce_file
from kinesis_lab.local.throttling import simulate_throttling

STREAM = "producer-test"
SAMPLE_ROWS = 540


@pytest.fixture
def kinesis(aws_clients):
    client = aws_clients("kinesis")
    client.create_stream(StreamName=STREAM, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    client.get_waiter("stream_exists").wait(StreamName=STREAM, WaiterConfig={"Delay": 0.2})
    return client


def read_stream(kinesis) -> dict[str, list[dict]]:
    """Every record of every shard (shard id -> decoded JSON bodies), read with get_records."""
    out = {}
    for shard_id, records in read_shards(kinesis, STREAM).items():
        bodies = []
        for record in records:
            assert record["Data"].endswith(b"\n")
            body = json.loads(record["Data"])
            assert record["PartitionKey"] == body["event_id"]
            bodies.append(body)
        out[shard_id] = bodies
    return out


def sample_rows() -> list[list[str]]:
    with open(SAMPLE_PATH, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))[1:]


def test_throttled_sample_arrives_exactly_once(kinesis, tmp_path):
    ids_path = tmp_path / "event_ids.txt"
    with simulate_throttling(kinesis, 0.3, seed=7):
        result = produce_file(SAMPLE_PATH, stream_name=STREAM, kinesis=kinesis, progress=False,
                              event_ids_path=ids_path)
    stored = read_stream(kinesis)
    bodies = [b for shard in stored.values() for b in shard]
    ids = Counter(b["event_id"] for b in bodies)

    assert result.csv_rows + result.malformed_rows == result.records_sent == len(bodies) == SAMPLE_ROWS
    assert max(ids.values()) == 1  # each event exactly once: failed entries were never written
    assert result.records_retried > 0 and result.records_retried == result.failed_entries
    assert result.malformed_rows == 1 and result.oversize_rows == 0  # the sample's one malformed line
    assert result.per_shard == {shard: len(b) for shard, b in stored.items() if b}
    assert len(result.per_shard) == 4  # ON_DEMAND: 4 shards, event ids spread over all of them
    written = ids_path.read_text().splitlines()
    assert set(written) == set(ids) and len(written) == SAMPLE_ROWS
    assert result.event_ids_sha256 == hashlib.sha256(ids_path.read_bytes()).hexdigest()
    by_line = sorted(bodies, key=lambda b: b["source_line"])
    assert [b["source_line"] for b in by_line] == list(range(2, SAMPLE_ROWS + 2))
    assert [[b[c] for c in COLUMNS] for b in by_line if not b.get("malformed")] == [
        row for row in sample_rows() if len(row) == len(COLUMNS)]
    assert written == [b["event_id"] for b in by_line]  # the id file is in line order
    assert result.as_dict()["records_sent"] == SAMPLE_ROWS


def test_without_failures_nothing_is_retried(kinesis):
    result = produce_file(SAMPLE_PATH, stream_name=STREAM, kinesis=kinesis, progress=False)
    assert sum(len(b) for b in read_stream(kinesis).values()) == SAMPLE_ROWS
    assert (result.records_retried, result.failed_entries, result.failed_calls) == (0, 0, 0)
    assert result.put_calls == 2  # 500 + 40
    assert result.records_per_second > 0 and result.warnings == []


def test_simulated_failures_are_not_written(kinesis):
    entries = [{"Data": f"{n}\n".encode(), "PartitionKey": f"key-{n}"} for n in range(50)]
    with simulate_throttling(kinesis, rate=0.5, seed=3) as sim:
        response = kinesis.put_records(StreamName=STREAM, Records=entries)
    failed = [n for n, e in enumerate(response["Records"]) if "ErrorCode" in e]
    assert 0 < len(failed) == response["FailedRecordCount"] == sim.injected_entries < 50
    assert {response["Records"][n]["ErrorCode"] for n in failed} == {"ProvisionedThroughputExceededException"}
    assert all("ShardId" in e for n, e in enumerate(response["Records"]) if n not in failed)
    stored = sorted(int(r["Data"]) for r in _raw_records(kinesis))
    assert stored == [n for n in range(50) if n not in failed]  # exactly the ones reported written

    with simulate_throttling(kinesis, rate=1.0) as sim:
        response = kinesis.put_records(StreamName=STREAM, Records=entries[:3])
    assert response["FailedRecordCount"] == 3 and sim.injected_entries == 3
    assert len(_raw_records(kinesis)) == len(stored)  # nothing more was written
    with pytest.raises(ValueError, match="rate must be between 0 and 1, got 1.5"):
        with simulate_throttling(kinesis, rate=1.5):
            pass


def _raw_records(kinesis) -> list[dict]:
    return [record for records in read_shards(kinesis, STREAM).values() for record in records]


def test_gives_up_with_a_clear_error_and_removes_its_hooks(kinesis):
    with pytest.raises(DeliveryError) as err, simulate_throttling(kinesis, 1.0):
        produce_file(SAMPLE_PATH, stream_name=STREAM, kinesis=kinesis, progress=False, max_retry_seconds=0.3)
    assert str(err.value) == (
        "500 record(s) not delivered to stream 'producer-test' after retrying for 0.3 s (last error: "
        "ProvisionedThroughputExceededException); first undelivered line: 2; 0 record(s) delivered before "
        "giving up; nothing after line 501 was sent"
    )
    assert err.value.undelivered_lines == list(range(2, 502)) and err.value.result.records_sent == 0
    assert _raw_records(kinesis) == []
    # the simulation hooks are gone: the same client writes again
    response = kinesis.put_records(StreamName=STREAM, Records=[{"Data": b"x\n", "PartitionKey": "k"}])
    assert response["FailedRecordCount"] == 0 and len(_raw_records(kinesis)) == 1


def test_whole_call_throttling_is_retried(aws_clients, kinesis):
    # no botocore retries: the producer's own loop must resend the throttled calls
    client = boto3.client("kinesis", region_name="us-east-1", config=Config(retries={"total_max_attempts": 1}))
    with simulate_throttling(client, rate=0.0, seed=1, call_rate=0.5) as sim:
        result = produce_file(SAMPLE_PATH, stream_name=STREAM, kinesis=client, progress=False, batch_size=100)
    ids = Counter(b["event_id"] for shard in read_stream(kinesis).values() for b in shard)
    assert len(ids) == SAMPLE_ROWS and max(ids.values()) == 1
    assert result.failed_calls == sim.injected_calls > 0
    assert result.records_retried > 0 and result.failed_entries == 0
    assert result.put_calls == 6 + result.failed_calls


def test_malformed_and_oversize_lines_reach_the_stream(kinesis, tmp_path):
    good = "World,WORLD,Global,2020,9.6,160.00,Total,5-17 years"
    big = good.replace("World", "y" * (1024 * 1024))
    path = tmp_path / "mixed.csv"
    path.write_bytes(f"{','.join(COLUMNS)}\n{good}\n{good},extra\n\n{big}\n".encode() + b"\xff,x\n")
    result = produce_file(path, stream_name=STREAM, kinesis=kinesis, progress=False)
    bodies = sorted((b for s in read_stream(kinesis).values() for b in s), key=lambda b: b["source_line"])
    assert [(b["source_line"], b.get("error")) for b in bodies] == [
        (2, None),
        (3, "too many fields (9, expected 8)"),
        (5, f"record over 1 MiB (line of {len(big)} bytes)"),
        (6, "not valid UTF-8 (byte 0xff at byte 1)"),
    ]
    assert (result.csv_rows, result.malformed_rows, result.oversize_rows, result.blank_lines) == (1, 3, 1, 1)
    assert result.records_sent == 4


def test_big_batches_fit_the_real_limits(kinesis, tmp_path):
    # lines of ~400 KB: batches are cut by bytes (about 12 per 5 MiB), and the server accepts them
    filler = "z" * 400_000
    path = tmp_path / "wide.csv"
    row = f"{filler},WORLD,Global,2020,9.6,160.00,Total,5-17 years\n"
    path.write_text(",".join(COLUMNS) + "\n" + row * 30, encoding="utf-8")
    result = produce_file(path, stream_name=STREAM, kinesis=kinesis, progress=False)
    assert result.csv_rows == 30 and result.put_calls == 3
    assert sum(len(b) for b in read_stream(kinesis).values()) == 30


def test_empty_file_and_missing_stream(kinesis, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    result = produce_file(empty, stream_name=STREAM, kinesis=kinesis, progress=False)
    assert result.records_sent == 0 and result.put_calls == 0
    assert result.warnings == ["empty.csv is empty: nothing to send"]
    with pytest.raises(SendInterrupted, match="^Kinesis refused PutRecords on stream 'no-such-stream': "
                       "ResourceNotFoundException: ") as err:
        produce_file(SAMPLE_PATH, stream_name="no-such-stream", kinesis=kinesis, progress=False)
    assert err.value.result.records_sent == 0
