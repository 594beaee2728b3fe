"""Simulated Kinesis throttling, for teaching, tests and benchmarks: a local stand-in for what a busy
stream answers. Code that runs on a real account never imports this module.

- ``simulate_throttling``: each PutRecords entry fails at random (and/or each whole call);
- ``simulate_capacity``: entries fail when over a per-shard capacity (``ShardCapacity``: token buckets
  per shard, entries assigned to shards as Kinesis does, ``hash_key``).

Both are botocore hooks on one client (``ThrottlingSimulator``): failed entries are taken out of the request
before it is sent, so they are never written, and put back, failed in place, into the response — what
AWS does to a throttled entry.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from botocore.awsrequest import AWSResponse

from kinesis_lab.cloud.producer import THROTTLED
from kinesis_lab.cloud.records import MAX_RECORD_BYTES


class _RawBody:
    """The minimal ``raw`` an ``AWSResponse`` reads its body from."""

    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_kwargs):
        yield self._body


def hash_key(partition_key: str, explicit_hash_key: str | None = None) -> int:
    """Where Kinesis puts a record: the MD5 of the partition key as a 128-bit integer (big-endian), or
    the ``ExplicitHashKey`` when one is given."""
    if explicit_hash_key:
        return int(explicit_hash_key)
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, holding at most ``size``."""

    __slots__ = ("rate", "size", "tokens")

    def __init__(self, rate: float, size: float, fill: float):
        self.rate, self.size, self.tokens = rate, size, size * fill

    def refill(self, seconds: float) -> None:
        self.tokens = min(self.size, self.tokens + self.rate * seconds)


@dataclass
class ShardCapacity:
    """Simulated write capacity of a stream: per shard, a token bucket of ``records_per_second`` and
    one of ``bytes_per_second`` (data + partition key), each holding ``burst_seconds`` of capacity and
    starting ``initial_fill`` full. Entries go to shards as on Kinesis (``hash_key`` against the
    shards' HashKeyRanges). ``admit`` takes a call's entries in order: an entry passes if its shard has
    a record token and enough byte tokens left (and uses them); otherwise it is over capacity and uses
    nothing, as a throttled entry on AWS.

    ``shards``: ``(shard_id, starting_hash_key, ending_hash_key)`` of the open shards; see
    ``from_stream``. ``clock``: seconds, monotonic (a fake one in tests). Real AWS limits per shard:
    1,000 records/s and 1 MiB/s; an on-demand stream starts at 4,000 records/s and 4 MB/s (4 shards).
    """

    shards: list[tuple[str, int, int]]
    records_per_second: float = 1000.0
    bytes_per_second: float = float(MAX_RECORD_BYTES)
    burst_seconds: float = 1.0
    initial_fill: float = 1.0
    clock: Callable[[], float] = time.monotonic
    admitted: Counter = field(init=False, default_factory=Counter)  # entries let through, per shard
    throttled: Counter = field(init=False, default_factory=Counter)  # entries over capacity, per shard
    admitted_bytes: int = field(init=False, default=0)

    def __post_init__(self):
        if not self.shards:
            raise ValueError("a stream needs at least one shard")
        if self.records_per_second <= 0 or self.bytes_per_second <= 0 or self.burst_seconds <= 0:
            raise ValueError("records_per_second, bytes_per_second and burst_seconds must be > 0")
        if not 0.0 <= self.initial_fill <= 1.0:
            raise ValueError(f"initial_fill must be between 0 and 1, got {self.initial_fill}")
        self.shards = sorted(((sid, int(lo), int(hi)) for sid, lo, hi in self.shards), key=lambda s: s[1])
        self._starts = [lo for _, lo, _ in self.shards]
        self._records = {sid: TokenBucket(self.records_per_second,
                                          self.records_per_second * self.burst_seconds, self.initial_fill)
                         for sid, _, _ in self.shards}
        self._bytes = {sid: TokenBucket(self.bytes_per_second, self.bytes_per_second * self.burst_seconds,
                                        self.initial_fill) for sid, _, _ in self.shards}
        self._last = self.clock()

    @classmethod
    def from_stream(cls, kinesis, stream_name: str, **kwargs) -> ShardCapacity:
        """The open shards of ``stream_name`` (``list_shards``), each with the given capacity."""
        shards, params = [], {"StreamName": stream_name}
        while True:
            page = kinesis.list_shards(**params)
            for shard in page["Shards"]:
                if "EndingSequenceNumber" in shard.get("SequenceNumberRange", {}):
                    continue  # closed (split or merged): takes no writes
                rng = shard["HashKeyRange"]
                shards.append((shard["ShardId"], int(rng["StartingHashKey"]), int(rng["EndingHashKey"])))
            if not page.get("NextToken"):
                return cls(shards, **kwargs)
            params = {"NextToken": page["NextToken"]}

    @property
    def records_limit(self) -> float:
        """The stream's capacity in records per second (all shards)."""
        return self.records_per_second * len(self.shards)

    def shard_of(self, partition_key: str, explicit_hash_key: str | None = None) -> str:
        key = hash_key(partition_key, explicit_hash_key)
        at = bisect.bisect_right(self._starts, key) - 1
        sid, lo, hi = self.shards[max(at, 0)]
        if not lo <= key <= hi:
            raise ValueError(f"hash key {key} is in no shard's HashKeyRange")
        return sid

    def admit(self, entries: list[dict]) -> list[tuple[int, str]]:
        """Apply one PutRecords call's entries (``Data``, ``PartitionKey``, optional ``ExplicitHashKey``)
        in order; returns ``(index, shard_id)`` of the entries over capacity."""
        now = self.clock()
        elapsed, self._last = max(0.0, now - self._last), now
        for tokens in (*self._records.values(), *self._bytes.values()):
            tokens.refill(elapsed)
        over = []
        for i, entry in enumerate(entries):
            key = entry.get("PartitionKey", "")
            sid = self.shard_of(key, entry.get("ExplicitHashKey"))
            data = entry.get("Data", b"")
            size = len(data.encode("utf-8") if isinstance(data, str) else data) + len(key.encode("utf-8"))
            records, volume = self._records[sid], self._bytes[sid]
            if records.tokens >= 1.0 and volume.tokens >= size:
                records.tokens -= 1.0
                volume.tokens -= size
                self.admitted[sid] += 1
                self.admitted_bytes += size
            else:
                over.append((i, sid))
                self.throttled[sid] += 1
        return over


@dataclass
class ThrottlingSimulator:
    """Botocore hooks on one Kinesis client that make PutRecords behave like a throttled stream.

    Partial failures are faithful to AWS: the chosen entries are taken out of the request before it is
    sent (so they are never written) and put back, failed in place, into the parsed response.
    Entries fail at random (``rate``), and/or when over a simulated ``capacity`` (``ShardCapacity``).
    ``call_rate`` also answers whole calls with a ProvisionedThroughputExceededException (nothing sent).
    """

    client: object
    rate: float
    seed: int = 0
    call_rate: float = 0.0
    injected_entries: int = 0
    injected_calls: int = 0
    capacity: ShardCapacity | None = None
    _rng: random.Random = field(init=False, repr=False)

    _KEY = "kinesis_lab_simulated_failures"

    def __post_init__(self):
        for name, value in (("rate", self.rate), ("call_rate", self.call_rate)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        self._rng = random.Random(self.seed)

    def _handlers(self):
        return (
            ("before-parameter-build.kinesis.PutRecords", self._remove_failed_entries, "lab-sim-params"),
            ("before-call.kinesis.PutRecords", self._answer_if_all_failed, "lab-sim-call"),
            ("before-send.kinesis.PutRecords", self._throttle_whole_call, "lab-sim-send"),
            ("after-call.kinesis.PutRecords", self._report_failed_entries, "lab-sim-after"),
        )

    def register(self) -> None:
        if getattr(self.client, self._KEY, None) is not None:
            raise RuntimeError("a throttling simulation is already active on this client: use one "
                               "ThrottlingSimulator with both rate and capacity instead of nesting them")
        setattr(self.client, self._KEY, self)
        for event, handler, unique_id in self._handlers():
            self.client.meta.events.register(event, handler, unique_id=unique_id)

    def unregister(self) -> None:
        for event, handler, unique_id in self._handlers():
            self.client.meta.events.unregister(event, handler, unique_id=unique_id)
        if getattr(self.client, self._KEY, None) is self:
            setattr(self.client, self._KEY, None)

    def __enter__(self) -> ThrottlingSimulator:
        self.register()
        return self

    def __exit__(self, *_exc) -> None:
        self.unregister()

    def _remove_failed_entries(self, params, context, **_kwargs):
        entries = params.get("Records") or []
        stream = params.get("StreamName") or params.get("StreamARN", "")
        failed: dict[int, str] = {}  # entry index -> the shard named in its error message ("" unknown)
        if self.rate > 0:
            failed = {i: "" for i in range(len(entries)) if self._rng.random() < self.rate}
        if self.capacity is not None:
            rest = [i for i in range(len(entries)) if i not in failed]
            for at, shard_id in self.capacity.admit([entries[i] for i in rest]):
                failed[rest[at]] = shard_id
        if not failed:
            return
        context[self._KEY] = (len(entries), failed, stream)
        if len(failed) < len(entries):
            params["Records"] = [e for i, e in enumerate(entries) if i not in failed]
        # all chosen: the request stays valid (>= 1 entry) and before-call answers it without sending

    def _answer_if_all_failed(self, context, **_kwargs):
        state = context.get(self._KEY)
        if state and len(state[1]) == state[0]:
            http = AWSResponse("", 200, {}, _RawBody(b"{}"))
            return http, {"FailedRecordCount": 0, "Records": [], "ResponseMetadata": {"HTTPStatusCode": 200}}
        return None

    def _throttle_whole_call(self, request, **_kwargs):
        if self.call_rate <= 0 or self._rng.random() >= self.call_rate:
            return None
        self.injected_calls += 1
        body = json.dumps({"__type": THROTTLED, "message": "Rate exceeded for stream (simulated by kinesis_lab)"})
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"},
                           _RawBody(body.encode()))

    def _report_failed_entries(self, http_response, parsed, context, **_kwargs):
        state = context.pop(self._KEY, None)
        if state is None or http_response.status_code >= 300:
            return
        total, failed, stream = state
        sent = iter(parsed.get("Records", []))

        def error(shard_id: str) -> dict:
            shard = f"shard {shard_id}" if shard_id else "shard"
            return {"ErrorCode": THROTTLED,
                    "ErrorMessage": f"Rate exceeded for {shard} in stream {stream} (simulated by kinesis_lab)"}

        parsed["Records"] = [error(failed[i]) if i in failed else next(sent) for i in range(total)]
        parsed["FailedRecordCount"] = parsed.get("FailedRecordCount", 0) + len(failed)
        self.injected_entries += len(failed)


def simulate_throttling(kinesis_client, rate: float, seed: int = 0,
                        call_rate: float = 0.0) -> ThrottlingSimulator:
    """``with simulate_throttling(kinesis, rate):`` within the block, each PutRecords entry fails with
    probability ``rate`` (not written, reported as ProvisionedThroughputExceededException) and each call
    with probability ``call_rate``. ``as`` gives the simulator (``injected_entries`` / ``injected_calls``)."""
    return ThrottlingSimulator(kinesis_client, rate, seed, call_rate)


def simulate_capacity(kinesis_client, stream_name: str, *, records_per_second: float = 1000.0,
                      bytes_per_second: float = float(MAX_RECORD_BYTES), burst_seconds: float = 1.0,
                      initial_fill: float = 1.0,
                      clock: Callable[[], float] = time.monotonic) -> ThrottlingSimulator:
    """Within the block, PutRecords on ``kinesis_client`` behaves as if each shard of ``stream_name``
    took at most ``records_per_second`` and ``bytes_per_second`` (token buckets, see ``ShardCapacity``):
    entries over capacity are not written and come back as ProvisionedThroughputExceededException.
    ``as`` gives the ``ThrottlingSimulator``; its ``capacity`` counts what passed and what was throttled."""
    capacity = ShardCapacity.from_stream(kinesis_client, stream_name, records_per_second=records_per_second,
                                         bytes_per_second=bytes_per_second, burst_seconds=burst_seconds,
                                         initial_fill=initial_fill, clock=clock)
    return ThrottlingSimulator(kinesis_client, 0.0, capacity=capacity)
