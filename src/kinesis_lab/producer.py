"""Send a CSV file to a Kinesis data stream: one JSON record (plus ``\\n``) per line.

What it does differently from the original course's producer (iterrows, batches of 100, a 0.1 s sleep
per batch, random partition keys, failed entries never resent):

- streams the file (binary, line by line): memory stays flat whatever the file size;
- every value is sent as the raw CSV text; typing is the silver layer's job;
- ``event_id`` = uuid5 over (the row's content, its occurrence among identical rows before it): sending
  the same rows again gives the same ids, so downstream drops repeats; appending or fixing a row
  changes only that row's id; identical rows (the dataset has them) keep distinct ids. It is also the
  partition key (spreads over shards);
- a line that cannot be parsed is not skipped: it travels as a marker record
  (``"malformed": true``, ``error``, ``raw_line``) and ends in quarantine downstream;
- batches respect the PutRecords limits (500 records, 5 MiB with partition keys, 1 MiB per record);
  a record over 1 MiB becomes a marker (``error`` "record over 1 MiB ...") so nothing is lost;
- only failed entries are resent, merged into the next calls (oldest failure first) until all are
  delivered, or a ``DeliveryError`` says which were not (a record still failing ``max_retry_seconds``
  after its first failure). A call in which nothing got through (a throttled call, every entry
  throttled) is followed by an exponential backoff with full jitter; once throttling shows up, the
  send rate adapts to what the stream accepts (``_SendRate``), so its capacity is used, not wasted.

CSV as RFC 4180 has it: a quoted field may hold commas, quotes ("") and line breaks, so one record may
span several physical lines (its ``source_line`` is the first). A quote that is still open after 1 MiB
or at the end of the file makes its first line a malformed marker, and reading goes on with the next
line: the rest of the file is read as if that line were not there.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import json
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from kinesis_lab.dataset import COLUMNS, header_problems
from kinesis_lab.progress import progress_bar

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024  # data + partition keys
MAX_RECORD_BYTES = 1024 * 1024  # data + partition key
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 2.0
# adaptive pacing once throttled (see _SendRate)
PACE_WINDOW_SECONDS = 0.5  # the send rate is re-evaluated over windows at least this long
PACE_HEADROOM = 0.10  # pace a little over the accepted rate: the capacity stays fully used
PACE_RAISE = 1.10  # per window whose throttled share is near the baseline
PACE_EXCESS_HIGH = 0.06  # throttled share over the baseline that slows sending down
PACE_EXCESS_LOW = 0.03  # ... and under which sending speeds up again
PACE_BASELINE_WINDOWS = 8
PACE_MIN_RATE = 10.0
PACE_MAX_RATE = 1e7
PACE_MAX_GAP_SECONDS = 0.5  # paced calls are cut to about this many seconds of entries
MAX_OPEN_RECORDS = 50_000  # records read but not yet committed (a record failing again and again holds them)
RAW_LINE_KEEP_CHARS = 4096  # how much of an oversize line its marker keeps
READ_CHUNK = 1024 * 1024
# fixed namespace: event ids stay the same across machines and versions
EVENT_NAMESPACE = uuid.UUID("7ba8f7ad-42a5-423b-bcf3-506a23e91beb")
THROTTLED = "ProvisionedThroughputExceededException"
RETRYABLE_CALL_ERRORS = {THROTTLED, "ThrottlingException", "KMSThrottlingException", "InternalFailure",
                         "InternalFailureException", "ServiceUnavailable", "ServiceUnavailableException"}


class HeaderError(ValueError):
    """The CSV header does not have the course's columns; raised before anything is sent."""


class RecordTooLargeError(ValueError):
    """A record over the 1 MiB PutRecords limit reached the batcher."""


class SendInterrupted(RuntimeError):
    """Sending stopped on an error that resending cannot fix (the stream is missing, access is denied,
    the endpoint stays unreachable after botocore's own retries). ``result`` holds the counts so far."""

    def __init__(self, message: str, result: ProduceResult):
        super().__init__(message)
        self.result = result


class DeliveryError(RuntimeError):
    """Some records could not be delivered within ``max_retry_seconds``. ``result`` holds the counts
    up to the failure; ``undelivered_lines`` the source lines of the records left over."""

    def __init__(self, message: str, result: ProduceResult, undelivered_lines: list[int]):
        super().__init__(message)
        self.result = result
        self.undelivered_lines = undelivered_lines


@dataclass(slots=True)
class Record:
    """One Kinesis record: ``kind`` is "row" (a well-formed line), "malformed" or "oversize"."""

    data: bytes
    partition_key: str
    event_id: str
    line: int
    kind: str = "row"
    last_line: int = 0  # the record's last physical line when a quoted field spans lines; 0: ``line``

    @property
    def malformed(self) -> bool:
        return self.kind != "row"

    @property
    def size(self) -> int:
        """What counts against the PutRecords limits: data + partition key bytes."""
        return len(self.data) + len(self.partition_key.encode("utf-8"))


def _dump(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


_json_text = json.encoder.encode_basestring  # str -> JSON string literal, non-ASCII kept (C speed)


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clock():
    """``now()`` giving the UTC ISO-8601 time, formatted at most once per millisecond."""
    last = [-1, ""]

    def now() -> str:
        ms = int(time.time() * 1000)
        if ms != last[0]:
            last[0], last[1] = ms, _utc_text(datetime.fromtimestamp(ms / 1000, UTC))
        return last[1]

    return now


def scan_file(path: str | Path) -> tuple[str, int]:
    """(sha256 hex of the bytes, number of physical lines), reading the file once in chunks."""
    digest, lines, last = hashlib.sha256(), 0, b""
    with Path(path).open("rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            digest.update(chunk)
            lines += chunk.count(b"\n")
            last = chunk
    if last and not last.endswith(b"\n"):
        lines += 1
    return digest.hexdigest(), lines


def event_id_for(content: str, occurrence: int = 1) -> str:
    """The id of a record: its content (``record_content``) and which of the identical records before it
    in the file it is (1: the first). Nothing else in the file changes it."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{occurrence}:{content}"))


def record_content(fields: list[str] | None = None, raw: str | None = None) -> str:
    """What an id is made of: a row's 8 fields in the course's column order, or a bad line's text."""
    return json.dumps(fields, ensure_ascii=False) if fields is not None else f"raw:{raw}"


class _Occurrences:
    """Counts identical records as they are read, by a 64-bit hash of their content (memory: one small int
    per distinct record). Two different records sharing a hash would only number the second "2": its id,
    made from its own content, stays distinct."""

    def __init__(self):
        self._seen: dict[int, int] = {}

    def next(self, content: str) -> int:
        key = hash(content)  # the same within one pass over the file, which is all that is counted
        occurrence = self._seen.get(key, 0) + 1
        self._seen[key] = occurrence
        return occurrence


OPEN_QUOTE = "unexpected end of data"  # what the csv module says about a quote still open


def _read_quoted_record(text: str, fh) -> tuple[list[str] | None, str, str, int]:
    """Parse a line that has quotes. A quoted field still open at the end of the line goes on on the next
    physical lines (RFC 4180): they are joined with "\\n" until the quote closes. Returns (fields, error,
    the record's text, lines joined). Lines are joined only into a record of the course's 8 fields: a quote
    still open after 1 MiB or at the end of the file, or closed into anything else, is the error "unclosed
    quote", with ``fh`` back right after the first line, so the next lines are read anew."""
    try:
        return next(csv.reader([text], strict=True)), "", text, 0
    except csv.Error as exc:
        if OPEN_QUOTE not in str(exc):
            return None, f"CSV syntax: {exc}", text, 0
    after_first, parts, size = fh.tell(), [text], len(text)
    while (raw := fh.readline(MAX_RECORD_BYTES + 1)) and (size := size + len(raw)) <= MAX_RECORD_BYTES:
        try:
            parts.append(raw.rstrip(b"\r\n").decode("utf-8"))
        except UnicodeDecodeError:
            break
        joined = "\n".join(parts)
        try:
            fields = next(csv.reader([joined], strict=True))
        except csv.Error as exc:
            if OPEN_QUOTE not in str(exc):
                break
            continue
        if len(fields) != len(COLUMNS):  # not a record spanning lines: a stray quote met another one
            break
        return fields, "", joined, len(parts) - 1
    fh.seek(after_first)
    return None, "unclosed quote", text, 0  # not closed within 1 MiB, nor before the end of the file


class RecordReader:
    """Iterates the records of one CSV file. Construction hashes the file and checks its header
    (``HeaderError``); iteration streams it. ``blank_lines`` counts lines skipped as empty."""

    def __init__(self, path: str | Path, *, produced_at: datetime | str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"CSV file not found: {self.path}")
        self.source_file = self.path.name
        self.file_sha256, self.total_lines = scan_file(self.path)
        self.blank_lines = 0
        if isinstance(produced_at, datetime):
            produced_at = _utc_text(produced_at)
        self._fixed_time = produced_at
        self.columns: list[str] | None = None  # header names in file order; None: empty file
        with self.path.open("rb") as fh:
            header = fh.readline(MAX_RECORD_BYTES)
        self._header_bytes = len(header)
        if header:
            self.columns = self._parse_header(header)

    @property
    def data_lines(self) -> int:
        """Physical lines after the header."""
        return max(0, self.total_lines - 1)

    def _parse_header(self, raw: bytes) -> list[str]:
        if len(raw) == MAX_RECORD_BYTES and not raw.endswith(b"\n"):
            raise HeaderError(f"{self.source_file}: the first line is over 1 MiB: not a CSV header")
        try:
            text = raw.decode("utf-8-sig").rstrip("\r\n")  # utf-8-sig drops a byte order mark
            names = [f.strip() for f in next(csv.reader([text], strict=True), [])]
            problems = header_problems(names) if names else ["the header line is empty"]
        except UnicodeDecodeError:
            problems = ["the header line is not valid UTF-8"]
        except csv.Error as exc:
            problems = [f"the header line is not valid CSV ({exc})"]
        if problems:
            raise HeaderError(
                f"{self.source_file}: the header does not match the course's columns: {'; '.join(problems)}. "
                f"Expected (any order): {', '.join(COLUMNS)}"
            )
        return names

    def __iter__(self) -> Iterator[Record]:
        if self.columns is None:
            return
        ncols = len(COLUMNS)
        in_order = tuple(self.columns) == COLUMNS
        order = [self.columns.index(c) for c in COLUMNS]
        now = (lambda: self._fixed_time) if self._fixed_time else _clock()
        source_file = self.source_file
        occurrences = _Occurrences()
        namespace = hashlib.sha1(EVENT_NAMESPACE.bytes)

        def make_id(content: str) -> str:  # == event_id_for(content, occurrence), faster
            h = namespace.copy()
            h.update(f"{occurrences.next(content)}:{content}".encode())
            d = h.digest()
            x = f"{d[:6].hex()}{0x50 | (d[6] & 0x0F):02x}{d[7]:02x}{0x80 | (d[8] & 0x3F):02x}{d[9:16].hex()}"
            return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"

        # a row's JSON built from a template: the 8 columns in course order, then the metadata
        template = "{" + ",".join(
            [f'"{c}":%s' for c in COLUMNS]
            + ['"event_id":"%s"', '"source_file":' + _json_text(source_file).replace("%", "%%"),
               '"source_line":%d', '"produced_at":%s']
        ) + "}\n"

        def marker(line: int, error: str, raw_line: str, kind: str = "malformed") -> Record:
            event_id = make_id(record_content(raw=raw_line))
            obj = {"event_id": event_id, "source_file": source_file, "source_line": line, "produced_at": now(),
                   "malformed": True, "error": error, "raw_line": raw_line}
            data = _dump(obj)
            if len(data) + len(event_id) > MAX_RECORD_BYTES:  # a huge bad line: keep its start only
                obj["raw_line"] = raw_line[:RAW_LINE_KEEP_CHARS]
                obj["raw_line_truncated"] = True
                data = _dump(obj)
            return Record(data, event_id, event_id, line, kind)

        line = 1
        with self.path.open("rb") as fh:
            fh.seek(self._header_bytes)  # past the header, checked in __init__
            while raw := fh.readline(MAX_RECORD_BYTES + 1):
                line += 1
                if len(raw) > MAX_RECORD_BYTES:  # never hold more than ~1 MiB of one line
                    start = raw[:RAW_LINE_KEEP_CHARS].decode("utf-8", "replace")
                    total = len(raw.rstrip(b"\r\n"))
                    while not raw.endswith(b"\n") and (raw := fh.readline(READ_CHUNK)):
                        total += len(raw.rstrip(b"\r\n"))
                    yield marker(line, f"record over 1 MiB (line of {total} bytes)", start, "oversize")
                    continue
                raw = raw.rstrip(b"\r\n")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield marker(line, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1})",
                                 raw.decode("utf-8", "replace"))
                    continue
                if not text.strip():
                    self.blank_lines += 1
                    continue
                first_line = line
                if '"' not in text and "\r" not in text:
                    fields = text.split(",")  # no quoting on this line: same result as the csv module
                else:
                    fields, error, text, more = _read_quoted_record(text, fh)
                    if error:
                        yield marker(line, error, text)
                        continue
                    line += more  # a quoted field spanned lines: ``text`` is them joined by "\n"
                if len(fields) != ncols:
                    kind = "too many" if len(fields) > ncols else "too few"
                    yield marker(first_line, f"{kind} fields ({len(fields)}, expected {ncols})", text)
                    continue
                if not in_order:
                    fields = [fields[i] for i in order]
                encoded = list(map(_json_text, fields))
                event_id = make_id("[" + ", ".join(encoded) + "]")  # == record_content(fields)
                data = (template % (*encoded, event_id, first_line, _json_text(now()))).encode("utf-8")
                if len(data) + len(event_id) > MAX_RECORD_BYTES:
                    yield marker(first_line, f"record over 1 MiB ({len(data) + len(event_id)} bytes)",
                                 text[:RAW_LINE_KEEP_CHARS], "oversize")
                    continue
                yield Record(data, event_id, event_id, first_line, last_line=line)


def iter_records(path: str | Path, *, produced_at: datetime | str | None = None) -> Iterator[Record]:
    """The records of a CSV file, in line order (see ``RecordReader``)."""
    return iter(RecordReader(path, produced_at=produced_at))


def _check_limits(max_records: int, max_bytes: int) -> None:
    if not 1 <= max_records <= MAX_RECORDS_PER_CALL:
        raise ValueError(f"max_records must be 1..{MAX_RECORDS_PER_CALL} (the PutRecords limit), got {max_records}")
    if not 1 <= max_bytes <= MAX_BYTES_PER_CALL:
        raise ValueError(f"max_bytes must be 1..{MAX_BYTES_PER_CALL} (5 MiB, the PutRecords limit), got {max_bytes}")


def _check_size(record: Record, max_bytes: int) -> int:
    size = record.size
    if size > MAX_RECORD_BYTES or size > max_bytes:
        raise RecordTooLargeError(
            f"line {record.line}: record of {size} bytes (data + partition key) is over the "
            f"{min(MAX_RECORD_BYTES, max_bytes)}-byte limit per record"
        )
    return size


def iter_batches(records: Iterable[Record], max_records: int = MAX_RECORDS_PER_CALL,
                 max_bytes: int = MAX_BYTES_PER_CALL) -> Iterator[list[Record]]:
    """Group records into PutRecords calls: at most ``max_records`` and ``max_bytes`` (data + partition
    keys) each. A record over 1 MiB raises ``RecordTooLargeError`` naming its line."""
    _check_limits(max_records, max_bytes)
    batch: list[Record] = []
    batch_bytes = 0
    for record in records:
        size = _check_size(record, max_bytes)
        if batch and (len(batch) >= max_records or batch_bytes + size > max_bytes):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(record)
        batch_bytes += size
    if batch:
        yield batch


# --- simulated throttling ---------------------------------------------------------------------------
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


class _Bucket:
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
        self._records = {sid: _Bucket(self.records_per_second, self.records_per_second * self.burst_seconds,
                                      self.initial_fill) for sid, _, _ in self.shards}
        self._bytes = {sid: _Bucket(self.bytes_per_second, self.bytes_per_second * self.burst_seconds,
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
        for bucket in (*self._records.values(), *self._bytes.values()):
            bucket.refill(elapsed)
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


@contextmanager
def simulate_throttling(kinesis_client, rate: float, seed: int = 0, call_rate: float = 0.0):
    """Within the block, each PutRecords entry fails with probability ``rate`` (not written, reported
    as ProvisionedThroughputExceededException) and each call with probability ``call_rate``.
    Yields the ``ThrottlingSimulator`` (its ``injected_entries`` / ``injected_calls`` counters)."""
    simulator = ThrottlingSimulator(kinesis_client, rate, seed, call_rate)
    simulator.register()
    try:
        yield simulator
    finally:
        simulator.unregister()


@contextmanager
def simulate_capacity(kinesis_client, stream_name: str, *, records_per_second: float = 1000.0,
                      bytes_per_second: float = float(MAX_RECORD_BYTES), burst_seconds: float = 1.0,
                      initial_fill: float = 1.0, clock: Callable[[], float] = time.monotonic):
    """Within the block, PutRecords on ``kinesis_client`` behaves as if each shard of ``stream_name``
    took at most ``records_per_second`` and ``bytes_per_second`` (token buckets, see ``ShardCapacity``):
    entries over capacity are not written and come back as ProvisionedThroughputExceededException.
    Yields the ``ThrottlingSimulator``; its ``capacity`` counts what passed and what was throttled."""
    capacity = ShardCapacity.from_stream(kinesis_client, stream_name, records_per_second=records_per_second,
                                         bytes_per_second=bytes_per_second, burst_seconds=burst_seconds,
                                         initial_fill=initial_fill, clock=clock)
    simulator = ThrottlingSimulator(kinesis_client, 0.0, capacity=capacity)
    simulator.register()
    try:
        yield simulator
    finally:
        simulator.unregister()


# --- producing -------------------------------------------------------------------------------------
@dataclass
class ProduceResult:
    """Counts of one run. Once complete, records_sent = csv_rows + malformed_rows (every marker record,
    oversize ones included) and matches the quarantine downstream."""

    source_file: str
    stream_name: str
    file_sha256: str = ""
    csv_rows: int = 0  # well-formed data lines delivered
    malformed_rows: int = 0  # marker records delivered (lines that could not be parsed or were too big)
    oversize_rows: int = 0  # of which: lines whose record would be over 1 MiB
    blank_lines: int = 0  # empty lines, nothing to send
    records_sent: int = 0
    bytes_sent: int = 0
    records_retried: int = 0  # entry resends (one entry resent twice counts 2)
    failed_entries: int = 0  # entries a PutRecords response reported failed
    put_calls: int = 0
    failed_calls: int = 0  # calls that failed as a whole (throttled) and were retried
    seconds: float = 0.0
    records_per_second: float = 0.0
    per_shard: dict[str, int] = field(default_factory=dict)
    event_ids_sha256: str = ""  # sha256 of the delivered event ids in line order, each + "\n"
    event_ids_path: str | None = None
    simulated_failure_rate: float = 0.0
    wait_seconds: float = 0.0  # time spent pacing or backing off between calls
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _backoff(attempt: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
    return rng.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt))


class _SendRate:
    """Adaptive pacing of the entries sent (records per second, resends included).

    Unpaced until throttling shows up. Every ``PACE_WINDOW_SECONDS`` the throttled share of the entries
    sent in the window is compared with a baseline: the lowest share seen in recent *paced* windows
    (failures that do not go away when sending slower, e.g. random ones, are not a reason to slow down).
    Well above the baseline: pace at the accepted rate of the window plus ``PACE_HEADROOM`` (a little
    over the capacity, so it stays fully used while only a few entries fail). Near the baseline: speed
    up by ``PACE_RAISE``; no failure at all: double. A window in which nothing got through changes
    nothing (the no-progress backoff deals with it).
    """

    def __init__(self):
        self.rate: float | None = None  # records/s; None: unpaced
        self.next_at = 0.0
        self._start: float | None = None
        self._paced = False
        self._sent = self._failed = self._calls = 0
        self._baseline: deque[float] = deque(maxlen=PACE_BASELINE_WINDOWS)

    def call_limit(self, batch_size: int) -> int:
        """Largest call now: paced calls are cut so that they stay about ``PACE_MAX_GAP_SECONDS`` apart."""
        if self.rate is None:
            return batch_size
        return max(1, min(batch_size, int(self.rate * PACE_MAX_GAP_SECONDS)))

    def delay(self, now: float) -> float:
        return 0.0 if self.rate is None else max(0.0, self.next_at - now)

    def sent(self, entries: int, now: float) -> None:
        if self.rate is not None:
            self.next_at = max(self.next_at, now) + entries / self.rate
        if self._start is None:
            self._start, self._paced = now, self.rate is not None

    def result(self, entries: int, failed: int, now: float) -> None:
        self._sent += entries
        self._failed += failed
        self._calls += 1
        elapsed = now - (self._start if self._start is not None else now)
        flooding = self._calls >= 3 and self._failed > self._sent / 2  # react at once, not after a window
        if elapsed < PACE_WINDOW_SECONDS and not (flooding and elapsed > 0):
            return
        sent, accepted, paced = self._sent, self._sent - self._failed, self._paced
        self._sent = self._failed = self._calls = 0
        self._start = now  # the next window: the calls that end after this one, so no time is left out
        if accepted == 0:
            self._paced = self.rate is not None
            return
        share = (sent - accepted) / sent
        if paced:
            self._baseline.append(share)
        excess = share - min(self._baseline, default=0.0)
        if excess > PACE_EXCESS_HIGH:
            target = max(PACE_MIN_RATE, accepted / elapsed * (1 + PACE_HEADROOM))
            self.rate = target if self.rate is None else min(self.rate, target)
        elif self.rate is not None:
            if share == 0:
                self.rate = min(PACE_MAX_RATE, max(self.rate, sent / elapsed) * 2)
            elif excess < PACE_EXCESS_LOW:
                self.rate = min(PACE_MAX_RATE, self.rate * PACE_RAISE)
        self._paced = self.rate is not None


@dataclass(slots=True)
class _Slot:
    """A record read from the file, in line order, until it is delivered and committed."""

    line: int
    event_id: str
    kind: str
    done: bool = False


@dataclass(slots=True)
class _Entry:
    record: Record
    slot: _Slot
    failed_at: float = 0.0  # monotonic time of its first failure; 0: never failed


def produce_file(
    path: str | Path,
    *,
    stream_name: str,
    kinesis,
    simulated_failure_rate: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    max_retry_seconds: float = 120.0,
    batch_size: int = MAX_RECORDS_PER_CALL,
    max_batch_bytes: int = MAX_BYTES_PER_CALL,
    event_ids_path: str | Path | None = None,
    produced_at: datetime | str | None = None,
) -> ProduceResult:
    """Send every line of ``path`` to ``stream_name`` and return the counts.

    ``kinesis`` is a boto3 Kinesis client. ``simulated_failure_rate`` (0..1) throttles that share of
    entries through botocore hooks on that client (seeded by ``seed``). ``event_ids_path``: a file to
    write the delivered event ids to, one per line, in line order. Raises ``HeaderError`` before sending
    anything if the header is wrong, ``DeliveryError`` if a record is still undelivered
    ``max_retry_seconds`` after its first failure.

    One call at a time, up to ``batch_size`` entries / ``max_batch_bytes``: the entries that failed
    first (oldest failure first), then new records. Only failed entries are resent. A call in which
    nothing got through is followed by an exponential backoff with full jitter; otherwise sending goes
    on at once, paced by ``_SendRate`` once throttling shows up.
    """
    _check_limits(batch_size, max_batch_bytes)
    started = time.perf_counter()
    reader = RecordReader(path, produced_at=produced_at)  # hashes the file, checks the header
    result = ProduceResult(source_file=reader.source_file, stream_name=stream_name,
                           file_sha256=reader.file_sha256, simulated_failure_rate=simulated_failure_rate,
                           event_ids_path=str(event_ids_path) if event_ids_path else None)
    if reader.columns is None:
        result.warnings.append(f"{reader.source_file} is empty: nothing to send")
    elif reader.data_lines == 0:
        result.warnings.append(f"{reader.source_file} has a header and no data lines: nothing to send")
    per_shard: Counter = Counter()
    ids_digest = hashlib.sha256()
    jitter = random.Random(seed + 1)
    records = iter(reader)
    lookahead: list[Record] = []  # read, not sent yet: did not fit in the last call
    window: deque[_Slot] = deque()  # records read and not committed yet, in line order
    retries: deque[_Entry] = deque()  # failed entries, oldest first failure first
    pacer = _SendRate()
    state = {"line_done": 1, "last_sent": 1}

    def finish() -> ProduceResult:
        result.seconds = round(time.perf_counter() - started, 3)
        result.records_per_second = round(result.records_sent / result.seconds, 1) if result.seconds else 0.0
        result.per_shard = dict(sorted(per_shard.items()))
        result.blank_lines = reader.blank_lines
        result.event_ids_sha256 = ids_digest.hexdigest()
        result.wait_seconds = round(result.wait_seconds, 3)
        return result

    def commit(ids_file, bar, final: bool = False) -> None:
        """Count the delivered records, in line order (``final``: all delivered ones, skipping the rest)."""
        while window and (window[0].done or final):
            slot = window.popleft()
            if not slot.done:
                continue
            ids_digest.update(f"{slot.event_id}\n".encode())
            if ids_file:
                ids_file.write(f"{slot.event_id}\n")
            if slot.kind == "row":
                result.csv_rows += 1
            else:
                result.malformed_rows += 1
                result.oversize_rows += slot.kind == "oversize"
            bar.update(slot.line - state["line_done"])
            state["line_done"] = slot.line

    def next_call(limit: int) -> list[_Entry]:
        call: list[_Entry] = []
        size = 0
        while retries and len(call) < limit:
            if call and size + retries[0].record.size > max_batch_bytes:
                return call
            entry = retries.popleft()
            call.append(entry)
            size += entry.record.size
        while len(call) < limit and len(window) < MAX_OPEN_RECORDS:
            if not lookahead:
                record = next(records, None)
                if record is None:
                    break
                _check_size(record, max_batch_bytes)
                lookahead.append(record)
            record = lookahead[0]
            if call and size + record.size > max_batch_bytes:
                break
            lookahead.clear()
            slot = _Slot(record.line, record.event_id, record.kind)
            window.append(slot)
            call.append(_Entry(record, slot))
            size += record.size
            state["last_sent"] = record.line
        return call

    with ExitStack() as stack:
        if simulated_failure_rate:
            stack.enter_context(simulate_throttling(kinesis, simulated_failure_rate, seed))
        ids_file = stack.enter_context(open(event_ids_path, "w", encoding="ascii")) if event_ids_path else None
        bar = stack.enter_context(progress_bar(reader.data_lines, f"{reader.source_file} -> {stream_name}",
                                               unit="row", disable=not progress))
        no_progress, last_error = 0, ""
        while call := next_call(pacer.call_limit(batch_size)):
            wait = pacer.delay(time.monotonic())
            if wait > 0:
                time.sleep(wait)
                result.wait_seconds += wait
            pacer.sent(len(call), time.monotonic())
            result.put_calls += 1
            result.records_retried += sum(1 for e in call if e.failed_at)
            failed: list[_Entry] = []
            try:
                response = kinesis.put_records(
                    StreamName=stream_name,
                    Records=[{"Data": e.record.data, "PartitionKey": e.record.partition_key} for e in call],
                )
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code not in RETRYABLE_CALL_ERRORS:
                    commit(ids_file, bar, final=True)
                    message = exc.response.get("Error", {}).get("Message", "")
                    raise SendInterrupted(f"Kinesis refused PutRecords on stream '{stream_name}': {code}: {message}",
                                          finish()) from exc
                result.failed_calls += 1
                failed, last_error = call, code
            except (BotocoreConnectionError, HTTPClientError) as exc:
                commit(ids_file, bar, final=True)
                raise SendInterrupted(f"the connection to Kinesis failed and stayed down ({exc})", finish()) from exc
            else:
                for e, answer in zip(call, response["Records"], strict=True):
                    if "ErrorCode" in answer:
                        failed.append(e)
                        last_error = answer["ErrorCode"]
                    else:
                        e.slot.done = True
                        per_shard[answer["ShardId"]] += 1
                        result.records_sent += 1
                        result.bytes_sent += len(e.record.data)
                result.failed_entries += len(failed)
            now = time.monotonic()
            pacer.result(len(call), len(failed), now)
            if failed:
                again = [e for e in failed if e.failed_at]  # older than every other retry: to the front
                fresh = [e for e in failed if not e.failed_at]  # newest failures: to the back
                for e in fresh:
                    e.failed_at = now
                retries.extendleft(reversed(again))
                retries.extend(fresh)
                no_progress = no_progress + 1 if len(failed) == len(call) else 0
                pause = _backoff(no_progress - 1, jitter) if no_progress else 0.0
                if now + pause + pacer.delay(now) > retries[0].failed_at + max_retry_seconds:
                    undelivered = sorted(e.slot.line for e in retries)
                    commit(ids_file, bar, final=True)
                    finish()
                    raise DeliveryError(
                        f"{len(undelivered)} record(s) not delivered to stream '{stream_name}' after retrying "
                        f"for {max_retry_seconds:g} s (last error: {last_error}); first undelivered line: "
                        f"{undelivered[0]}; {result.records_sent} record(s) delivered before giving up; "
                        f"nothing after line {state['last_sent']} was sent",
                        result,
                        undelivered,
                    )
                if pause:
                    time.sleep(pause)
                    result.wait_seconds += pause
            else:
                no_progress = 0
            commit(ids_file, bar)
        if window or retries or lookahead:  # never end quietly with records left behind
            raise RuntimeError(f"internal error: {len(window)} record(s) left uncommitted after the last call")
        bar.update(reader.data_lines - (state["line_done"] - 1))
    return finish()
