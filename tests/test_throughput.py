"""The simulated stream capacity (token buckets per shard, as Kinesis assigns shards) and the producer's
adaptive sending against it. Correctness only: fake clocks, no timing assertions."""

from __future__ import annotations

import hashlib
import json
import random
import time as real_time
from collections import Counter

import pytest
from helpers import FakeClock, read_shards

from kinesis_lab.cloud import producer
from kinesis_lab.cloud.dataset import COLUMNS, generate_synthetic_sample
from kinesis_lab.cloud.producer import THROTTLED, DeliveryError, _SendRate, produce_file
from kinesis_lab.cloud.records import iter_records
from kinesis_lab.local.throttling import ShardCapacity, hash_key, simulate_capacity, simulate_throttling

TOP = 2**128
FOUR = [(f"shardId-{i:012d}", i * TOP // 4, (i + 1) * TOP // 4 - 1) for i in range(4)]


def keys_by_shard(capacity: ShardCapacity, wanted: dict[str, int]) -> list[str]:
    """Partition keys hashing to each shard, as many as asked, interleaved shard by shard."""
    found: dict[str, list[str]] = {sid: [] for sid in wanted}
    n = 0
    while any(len(found[s]) < wanted[s] for s in wanted):
        key = f"key-{n}"
        n += 1
        sid = capacity.shard_of(key)
        if sid in found and len(found[sid]) < wanted[sid]:
            found[sid].append(key)
    out = []
    for i in range(max(wanted.values())):
        out += [found[s][i] for s in wanted if i < len(found[s])]
    return out


def entries(keys: list[str], size: int = 10) -> list[dict]:
    return [{"Data": b"x" * (size - len(k)), "PartitionKey": k} for k in keys]


# --- shard assignment ------------------------------------------------------------------------------
def test_hash_key_is_the_md5_of_the_partition_key_as_a_128_bit_integer():
    assert hash_key("a") == int(hashlib.md5(b"a").hexdigest(), 16) == 0x0CC175B9C0F1B6A831C399E269772661
    assert hash_key("ñ") == int.from_bytes(hashlib.md5("ñ".encode()).digest(), "big")
    assert hash_key("whatever", explicit_hash_key="42") == 42
    capacity = ShardCapacity(FOUR, clock=FakeClock())
    assert capacity.shard_of("a") == "shardId-000000000000"  # 0x0cc1... is in the first quarter
    assert capacity.shard_of("x", explicit_hash_key=str(TOP - 1)) == "shardId-000000000003"
    assert capacity.shard_of("x", explicit_hash_key=str(TOP // 4)) == "shardId-000000000001"
    assert capacity.shard_of("x", explicit_hash_key=str(TOP // 4 - 1)) == "shardId-000000000000"
    assert capacity.records_limit == 4000


def test_shards_are_chosen_as_the_stream_does(aws_clients):
    kinesis = aws_clients("kinesis")
    kinesis.create_stream(StreamName="hash-check", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    capacity = ShardCapacity.from_stream(kinesis, "hash-check", clock=FakeClock())
    assert len(capacity.shards) == 4
    keys = [f"partition-{n}" for n in range(200)] + ["é", "a" * 256]
    answer = kinesis.put_records(StreamName="hash-check", Records=entries(keys))
    assert [r["ShardId"] for r in answer["Records"]] == [capacity.shard_of(k) for k in keys]


# --- token buckets ---------------------------------------------------------------------------------
def test_a_burst_over_capacity_fails_exactly_the_entries_over_it_per_shard():
    clock = FakeClock()
    capacity = ShardCapacity(FOUR, records_per_second=10, clock=clock)  # buckets start full: 10 each
    sids = [s for s, _, _ in FOUR]
    keys = keys_by_shard(capacity, {sids[0]: 15, sids[1]: 10, sids[2]: 3, sids[3]: 12})
    failed = capacity.admit(entries(keys))
    seen: Counter = Counter()
    expected = []
    for i, key in enumerate(keys):
        sid = capacity.shard_of(key)
        seen[sid] += 1
        if seen[sid] > 10:  # the 11th and later entries of a shard, in request order
            expected.append((i, sid))
    assert failed == expected
    assert Counter(sid for _, sid in failed) == {sids[0]: 5, sids[3]: 2}
    assert capacity.admitted == {sids[0]: 10, sids[1]: 10, sids[2]: 3, sids[3]: 10}
    assert capacity.throttled == {sids[0]: 5, sids[3]: 2}

    # half a second later: 5 tokens more per shard (sids[2] kept its 7 unused ones: 10 at most)
    clock.now += 0.5
    again = keys_by_shard(capacity, {sid: 11 for sid in sids})
    failed = capacity.admit(entries(again))
    assert Counter(sid for _, sid in failed) == {sids[0]: 6, sids[1]: 6, sids[2]: 1, sids[3]: 6}


def test_throttled_entries_use_no_capacity_and_refill_stops_at_the_burst():
    clock = FakeClock()
    capacity = ShardCapacity(
        FOUR[:1] + [("other", TOP // 4, TOP - 1)],
        records_per_second=4,
        burst_seconds=0.5,
        initial_fill=0.0,
        clock=clock,
    )
    key = keys_by_shard(capacity, {"shardId-000000000000": 1})[0]
    assert capacity.admit(entries([key] * 3)) == [(0, FOUR[0][0]), (1, FOUR[0][0]), (2, FOUR[0][0])]
    clock.now += 0.25  # one token
    assert [i for i, _ in capacity.admit(entries([key] * 3))] == [1, 2]
    clock.now += 100  # refills to the burst (0.5 s x 4/s = 2 tokens), not to 400
    assert [i for i, _ in capacity.admit(entries([key] * 5))] == [2, 3, 4]


def test_the_byte_limit_counts_data_and_partition_key_per_shard():
    clock = FakeClock()
    capacity = ShardCapacity(FOUR, records_per_second=1000, bytes_per_second=100, clock=clock)
    key = keys_by_shard(capacity, {"shardId-000000000002": 1})[0]
    big, small = 60, 30  # bytes with the key
    calls = entries([key], big) + entries([key], big) + entries([key], small) + entries([key], small)
    # 60 passes (40 left), the second 60 does not fit, 30 fits (10 left), the last 30 does not
    assert [i for i, _ in capacity.admit(calls)] == [1, 3]
    assert capacity.admitted_bytes == 90
    text = [{"Data": "é" * 10, "PartitionKey": key}]  # str data counts UTF-8 bytes
    clock.now += 1
    assert capacity.admit(text * 5) == [(4, "shardId-000000000002")]  # 20 + len(key) bytes each


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="at least one shard"):
        ShardCapacity([])
    with pytest.raises(ValueError, match="must be > 0"):
        ShardCapacity(FOUR, records_per_second=0)
    with pytest.raises(ValueError, match="initial_fill must be between 0 and 1"):
        ShardCapacity(FOUR, initial_fill=2)
    with pytest.raises(ValueError, match="in no shard's HashKeyRange"):
        ShardCapacity([("half", 0, TOP // 2)], clock=FakeClock()).shard_of("x", str(TOP - 1))


# --- the hooks on a real client ---------------------------------------------------------------------
def read_back(kinesis, stream: str) -> list[dict]:
    return [{**r, "ShardId": shard_id} for shard_id, records in read_shards(kinesis, stream).items()
            for r in records]


def test_hooks_fail_the_over_capacity_entries_in_place_and_do_not_write_them(aws_clients):
    kinesis = aws_clients("kinesis")
    kinesis.create_stream(StreamName="capacity", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    clock = FakeClock()
    with simulate_capacity(kinesis, "capacity", records_per_second=5, initial_fill=1.0, clock=clock) as sim:
        keys = [f"k{n}" for n in range(40)]
        first = kinesis.put_records(StreamName="capacity", Records=entries(keys))
        clock.now += 0.4  # 2 tokens per shard
        second = kinesis.put_records(StreamName="capacity", Records=entries(keys))
        third = kinesis.put_records(StreamName="capacity", Records=entries(keys[:3]))  # no tokens left
    assert third["FailedRecordCount"] == 3  # a call with every entry over capacity: answered, not sent

    by_shard = Counter(sim.capacity.shard_of(k) for k in keys)
    assert first["FailedRecordCount"] == sum(max(0, n - 5) for n in by_shard.values())
    assert second["FailedRecordCount"] == sum(max(0, n - 2) for n in by_shard.values())
    written = Counter()
    for response in (first, second, third):
        for key, answer in zip(keys, response["Records"], strict=False):
            if "ErrorCode" in answer:
                assert answer["ErrorCode"] == THROTTLED
                shard = sim.capacity.shard_of(key)
                assert answer["ErrorMessage"] == (
                    f"Rate exceeded for shard {shard} in stream capacity (simulated by kinesis_lab)"
                )
            else:
                assert answer["ShardId"] == sim.capacity.shard_of(key)
                written[(key, answer["SequenceNumber"])] += 1
    stored = read_back(kinesis, "capacity")
    assert Counter((r["PartitionKey"], r["SequenceNumber"]) for r in stored) == written  # only the accepted
    assert (
        len(stored)
        == sum(min(n, 5) + min(n, 2) for n in by_shard.values())
        == sum(sim.capacity.admitted.values())
    )
    # the hooks are gone after the block
    assert kinesis.put_records(StreamName="capacity", Records=entries(keys))["FailedRecordCount"] == 0


def test_the_producer_under_capacity_delivers_every_record_once_in_line_order(aws_clients, tmp_path):
    kinesis = aws_clients("kinesis")
    kinesis.create_stream(StreamName="paced", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    ids_path = tmp_path / "ids.txt"
    rows = generate_synthetic_sample(tmp_path / "rows.csv", rows=540, seed=11, dirty=False)  # well-formed rows only
    with simulate_capacity(kinesis, "paced", records_per_second=100, initial_fill=0.0) as sim:
        result = produce_file(
            rows, stream_name="paced", kinesis=kinesis, progress=False, event_ids_path=ids_path
        )
    stored = [json.loads(r["Data"]) for r in read_back(kinesis, "paced")]
    ids = Counter(b["event_id"] for b in stored)
    assert len(stored) == len(ids) == result.records_sent == result.csv_rows == 540  # each exactly once
    assert result.failed_entries == sim.injected_entries == sum(sim.capacity.throttled.values()) > 0
    assert result.records_retried == result.failed_entries  # every failure was resent, once per failure
    assert ids_path.read_text().splitlines() == [
        b["event_id"] for b in sorted(stored, key=lambda b: b["source_line"])
    ]
    assert result.event_ids_sha256 == hashlib.sha256(ids_path.read_bytes()).hexdigest()
    assert {b["Country"] for b in stored} and set(COLUMNS) <= set(stored[0])


# --- the producer's sending loop, with a fake clock and a fake client -------------------------------
class FakeTime:
    def __init__(self):
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    perf_counter = monotonic

    def time(self) -> float:
        return real_time.time()

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


class FakeKinesis:
    """put_records against a ShardCapacity on the fake clock (+ random failures, + keys that always fail);
    each call takes 5 ms + 0.1 ms per entry of fake time."""

    def __init__(
        self,
        fake: FakeTime,
        capacity: ShardCapacity | None = None,
        rate: float = 0.0,
        always_failing: set[str] = frozenset(),
    ):
        self.fake, self.capacity, self.rate, self.always = fake, capacity, rate, always_failing
        self.rng = random.Random(5)
        self.stored: list[str] = []

    def put_records(self, StreamName, Records):  # noqa: N803 (boto3's names)
        self.fake.t += 0.005 + 0.0001 * len(Records)
        failed = {i for i, r in enumerate(Records) if r["PartitionKey"] in self.always}
        failed |= {i for i in range(len(Records)) if self.rng.random() < self.rate}
        if self.capacity:
            rest = [i for i in range(len(Records)) if i not in failed]
            failed |= {rest[at] for at, _ in self.capacity.admit([Records[i] for i in rest])}
        answers = []
        for i, r in enumerate(Records):
            if i in failed:
                answers.append({"ErrorCode": THROTTLED, "ErrorMessage": "Rate exceeded"})
            else:
                self.stored.append(r["PartitionKey"])
                answers.append({"ShardId": "shardId-000000000000", "SequenceNumber": str(len(self.stored))})
        return {"FailedRecordCount": len(failed), "Records": answers}


@pytest.fixture
def fake_time(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(producer, "time", fake)
    return fake


@pytest.fixture
def rows_csv(tmp_path):
    path = tmp_path / "rows.csv"
    line = "World,WORLD,Global,2020,9.6,160.00,Total,5-17 years\n"
    path.write_text(",".join(COLUMNS) + "\n" + line * 6000, encoding="utf-8")
    return path


def test_sending_settles_at_the_capacity_without_loss(fake_time, rows_csv):
    capacity = ShardCapacity(FOUR, records_per_second=250, initial_fill=0.0, clock=fake_time.monotonic)
    client = FakeKinesis(fake_time, capacity)
    result = produce_file(rows_csv, stream_name="s", kinesis=client, progress=False)
    assert len(client.stored) == len(set(client.stored)) == result.records_sent == 6000
    assert result.records_retried == result.failed_entries > 0
    # the buckets start empty: 6000 records at 1000/s cannot take under 6 s, and pacing keeps it close
    assert 6.0 <= result.seconds <= 6.0 / 0.9
    assert result.failed_entries < 0.5 * result.records_sent  # paced, not flooding
    assert result.wait_seconds > 0


def test_random_failures_do_not_slow_sending_down(fake_time, rows_csv):
    client = FakeKinesis(fake_time, rate=0.3)
    result = produce_file(rows_csv, stream_name="s", kinesis=client, progress=False)
    assert len(set(client.stored)) == 6000 and result.records_sent == 6000
    # unpaced, a call of 500 takes 55 ms here and delivers ~350: about 1 s; pacing may cost a little
    assert result.wait_seconds < 0.25 * result.seconds


def test_a_record_failing_for_good_gives_up_after_max_retry_seconds_with_the_rest_delivered(
    fake_time, rows_csv, tmp_path
):
    line_of = {r.event_id: r.line for r in iter_records(rows_csv)}
    bad = next(i for i, line in line_of.items() if line == 100)  # line 100's partition key
    client = FakeKinesis(fake_time, always_failing={bad})
    ids_path = tmp_path / "ids.txt"
    with pytest.raises(DeliveryError) as err:
        produce_file(
            rows_csv,
            stream_name="s",
            kinesis=client,
            progress=False,
            max_retry_seconds=5,
            event_ids_path=ids_path,
        )
    error = err.value
    assert error.undelivered_lines == [100]
    assert str(error).startswith(
        "1 record(s) not delivered to stream 's' after retrying for 5 s (last error: "
        "ProvisionedThroughputExceededException); first undelivered line: 100; "
    )
    assert error.result.records_sent == len(client.stored) == error.result.csv_rows
    assert bad not in client.stored and len(set(client.stored)) == len(client.stored)
    assert ids_path.read_text().splitlines() == sorted(client.stored, key=line_of.get)  # in line order


def test_the_send_rate_controller():
    rate = _SendRate()
    assert rate.rate is None and rate.call_limit(500) == 500 and rate.delay(0.0) == 0.0
    now = 0.0

    def window(calls: int, sent: int, failed: int):
        nonlocal now
        for _ in range(calls):
            rate.sent(sent, now)
            now += 0.125
            rate.result(sent, failed, now)

    # a window with 40 % throttled: pace at what got through + 10 %
    window(4, 500, 200)
    assert rate.rate == pytest.approx(1200 / 0.5 * 1.1)
    # paced windows with the same share of failures (e.g. random ones): not slowed further, sped up
    window(12, 500, 200)
    assert rate.rate == pytest.approx(2640 * 1.1**3)
    # a window without any failure doubles the rate
    before = rate.rate
    window(4, 100, 0)
    assert rate.rate == pytest.approx(2 * before)
    # a window where nothing got through changes nothing (the backoff handles it)
    before = rate.rate
    window(4, 10, 10)
    assert rate.rate == before
    # mostly throttled: react after 3 calls, without waiting for the whole window
    flooded = _SendRate()
    for n in range(3):
        flooded.sent(500, n * 0.01)
        flooded.result(500, 450, (n + 1) * 0.01)
    assert flooded.rate == pytest.approx(150 / 0.03 * 1.1)

    paced = _SendRate()
    paced.rate = 2000.0
    assert paced.call_limit(500) == 500 and paced.call_limit(2000) == 1000  # calls about 0.5 s apart at most
    paced.sent(500, 10.0)
    assert paced.delay(10.0) == pytest.approx(0.25) and paced.delay(10.3) == 0.0


def test_simulations_do_not_nest_on_one_client():
    import boto3

    client = boto3.client(
        "kinesis", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with simulate_throttling(client, 0.1):
        with pytest.raises(RuntimeError, match="already active on this client"):
            with simulate_throttling(client, 0.2):
                pass
    with simulate_throttling(client, 0.2) as sim:  # the first one was removed on exit
        assert sim.rate == 0.2
