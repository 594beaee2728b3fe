"""Send a CSV file to a Kinesis data stream: one JSON record per line (``kinesis_lab.cloud.records``).

What it does differently from the original course's producer (iterrows, batches of 100, a 0.1 s sleep
per batch, random partition keys, failed entries never resent):

- streams the file: memory stays flat whatever the file size; a line that cannot be parsed travels as a
  marker record (see ``kinesis_lab.cloud.records``), so nothing is lost;
- calls respect the PutRecords limits (500 records, 5 MiB with partition keys, 1 MiB per record):
  ``kinesis_lab.cloud.batching.CallBuilder``;
- only failed entries are resent, merged into the next calls (oldest failure first) until all are
  delivered, or a ``DeliveryError`` says which were not (a record still failing ``max_retry_seconds``
  after its first failure). A call in which nothing got through (a throttled call, every entry
  throttled) is followed by an exponential backoff with full jitter; once throttling shows up, the
  send rate adapts to what the stream accepts (``_SendRate``), so its capacity is used, not wasted.

To watch the retries without a busy stream, wrap the call in ``kinesis_lab.local.throttling.simulate_throttling``
(a local stand-in: this module does not use it).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter, deque
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from kinesis_lab.cloud.batching import MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL, CallBuilder
from kinesis_lab.cloud.progress import progress_bar
from kinesis_lab.cloud.read_ahead import read_ahead
from kinesis_lab.cloud.records import Record, RecordReader

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
THROTTLED = "ProvisionedThroughputExceededException"
RETRYABLE_CALL_ERRORS = {THROTTLED, "ThrottlingException", "KMSThrottlingException", "InternalFailure",
                         "InternalFailureException", "ServiceUnavailable", "ServiceUnavailableException"}


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
class _Entry:
    """A record read from the file, from then until it is committed (in line order). Once delivered, only
    what committing needs is kept: a record failing again and again holds the delivered ones behind it."""

    record: Record | None
    request: dict | None  # its PutRecords entry: {"Data": ..., "PartitionKey": ...}
    line: int
    event_id: str
    kind: str
    failed_at: float = 0.0  # monotonic time of its first failure; 0: never failed
    done: bool = False  # delivered

    def delivered(self) -> None:
        self.done, self.record, self.request = True, None, None


class _Send:
    """The state of one ``produce_file`` run: the records read and not committed yet (``window``, in line
    order), the failed entries waiting to be resent (``retries``, oldest failure first), the pacing,
    and the counts. It opens the event id file and the progress bar; leaving the ``with`` closes them."""

    def __init__(self, path: str | Path, stream_name: str, kinesis, *, max_retry_seconds: float,
                 batch_size: int, max_batch_bytes: int, event_ids_path, progress: bool, produced_at):
        self.started = time.perf_counter()
        self.call = CallBuilder(batch_size, max_batch_bytes)  # bad limits: ValueError before reading
        self.reader = reader = RecordReader(path, produced_at=produced_at)  # hashes the file, checks header
        self.stream_name, self.kinesis = stream_name, kinesis
        self.max_retry_seconds, self.batch_size = max_retry_seconds, batch_size
        self.result = ProduceResult(source_file=reader.source_file, stream_name=stream_name,
                                    file_sha256=reader.file_sha256,
                                    event_ids_path=str(event_ids_path) if event_ids_path else None)
        if reader.columns is None:
            self.result.warnings.append(f"{reader.source_file} is empty: nothing to send")
        elif reader.data_lines == 0:
            self.result.warnings.append(
                f"{reader.source_file} has a header and no data lines: nothing to send")
        self.lookahead: _Entry | None = None  # read, not sent yet: did not fit in the last call
        self.window: deque[_Entry] = deque()
        self.retries: deque[_Entry] = deque()
        self.pacer = _SendRate()
        self.jitter = random.Random()
        self.per_shard: Counter = Counter()
        self.ids_digest = hashlib.sha256()
        self.line_done = self.last_sent = 1
        self.no_progress, self.last_error = 0, ""
        self._open = ExitStack()
        self.ids_file = None
        if event_ids_path:
            self.ids_file = self._open.enter_context(open(event_ids_path, "w", encoding="ascii"))
        self.bar = self._open.enter_context(progress_bar(
            reader.data_lines, f"{reader.source_file} -> {stream_name}", unit="row", disable=not progress))
        # the next entries are prepared in a thread while a call waits for Kinesis (set: it may work)
        self.waiting = threading.Event()
        self.entries = read_ahead(iter(reader), self._prepare, self.waiting, size=lambda e: e.record.size)
        self._open.callback(self.entries.close)  # however sending ends, the thread stops
        events = getattr(getattr(kinesis, "meta", None), "events", None)  # a stand-in client may have none
        for event, handler in (("before-send.kinesis.PutRecords", lambda **_: self.waiting.set()),
                               ("needs-retry.kinesis.PutRecords", lambda **_: self.waiting.clear())):
            if events is not None:
                uid = f"kinesis-lab-read-ahead-{id(self)}-{event}"
                events.register(event, handler, unique_id=uid)
                self._open.callback(events.unregister, event, unique_id=uid)

    def _prepare(self, record: Record) -> _Entry:
        """In the read-ahead thread: a record over the limits raises here, in line order."""
        self.call.check(record)
        return _Entry(record, {"Data": record.data, "PartitionKey": record.partition_key}, record.line,
                      record.event_id, record.kind)

    def __enter__(self) -> _Send:
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        with self._open:  # closes the event id file and the progress bar
            if exc_type is None:
                if self.window or self.retries or self.lookahead:  # never end quietly with records left
                    raise RuntimeError(f"internal error: {len(self.window)} record(s) left uncommitted "
                                       "after the last call")
                self.bar.update(self.reader.data_lines - (self.line_done - 1))

    def next_call(self) -> list[_Entry]:
        """The next call's entries: the failed ones first (oldest failure first), then new records."""
        call, limit = self.call, self.pacer.call_limit(self.batch_size)
        while self.retries and not call.full(limit) and call.fits(self.retries[0].record):
            entry = self.retries.popleft()
            call.add(entry, entry.record)
        if self.retries:  # the call is full
            return call.take()
        while not call.full(limit) and len(self.window) < MAX_OPEN_RECORDS:
            if self.lookahead is None:
                self.lookahead = next(self.entries, None)
                if self.lookahead is None:
                    break
            entry = self.lookahead
            if not call.fits(entry.record):
                break
            self.lookahead = None
            self.window.append(entry)
            call.add(entry, entry.record)
            self.last_sent = entry.line
        return call.take()

    def wait_for_pace(self, entries: int) -> None:
        """Sleep until the paced rate allows ``entries`` more (no wait while unpaced)."""
        wait = self.pacer.delay(time.monotonic())
        if wait > 0:
            time.sleep(wait)
            self.result.wait_seconds += wait
        self.pacer.sent(entries, time.monotonic())

    def put_records(self, call: list[_Entry]) -> list[_Entry]:
        """One PutRecords call; returns the entries that failed (all of them if the call was throttled).
        An error that resending cannot fix raises ``SendInterrupted``."""
        self.result.put_calls += 1
        self.result.records_retried += sum(1 for e in call if e.failed_at)
        try:
            response = self.kinesis.put_records(StreamName=self.stream_name, Records=[e.request for e in call])
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code", "") not in RETRYABLE_CALL_ERRORS:
                raise self.interrupted(f"Kinesis refused PutRecords on stream '{self.stream_name}': "
                                       f"{error.get('Code', '')}: {error.get('Message', '')}") from exc
            self.result.failed_calls += 1
            self.last_error = error["Code"]
            return call
        except (BotocoreConnectionError, HTTPClientError) as exc:
            raise self.interrupted(f"the connection to Kinesis failed and stayed down ({exc})") from exc
        answers = response["Records"]
        if not response.get("FailedRecordCount") and len(answers) == len(call):  # all in: no per-entry checks
            self.result.bytes_sent += sum(len(entry.record.data) for entry in call)
            for entry in call:
                entry.delivered()
            self.per_shard.update(answer["ShardId"] for answer in answers)
            self.result.records_sent += len(call)
            return []
        failed = []
        for entry, answer in zip(call, answers, strict=True):
            if "ErrorCode" in answer:
                failed.append(entry)
                self.last_error = answer["ErrorCode"]
            else:
                self.result.bytes_sent += len(entry.record.data)
                entry.delivered()
                self.per_shard[answer["ShardId"]] += 1
                self.result.records_sent += 1
        self.result.failed_entries += len(failed)
        return failed

    def requeue(self, call: list[_Entry], failed: list[_Entry]) -> None:
        """Put the failed entries in line for the next calls, back off if nothing got through, and give
        up (``DeliveryError``) once a record has been failing for ``max_retry_seconds``."""
        now = time.monotonic()
        self.pacer.result(len(call), len(failed), now)
        if not failed:
            self.no_progress = 0
            return
        again = [e for e in failed if e.failed_at]  # older than every other retry: to the front
        fresh = [e for e in failed if not e.failed_at]  # newest failures: to the back
        for e in fresh:
            e.failed_at = now
        self.retries.extendleft(reversed(again))
        self.retries.extend(fresh)
        self.no_progress = self.no_progress + 1 if len(failed) == len(call) else 0
        pause = _backoff(self.no_progress - 1, self.jitter) if self.no_progress else 0.0
        if now + pause + self.pacer.delay(now) > self.retries[0].failed_at + self.max_retry_seconds:
            self.give_up()
        if pause:
            time.sleep(pause)
            self.result.wait_seconds += pause

    def give_up(self) -> None:
        undelivered = sorted(e.line for e in self.retries)
        message = (f"{len(undelivered)} record(s) not delivered to stream '{self.stream_name}' after "
                   f"retrying for {self.max_retry_seconds:g} s (last error: {self.last_error}); first "
                   f"undelivered line: {undelivered[0]}; {self.result.records_sent} record(s) delivered "
                   f"before giving up; nothing after line {self.last_sent} was sent")
        self.commit(final=True)
        raise DeliveryError(message, self.finish(), undelivered)

    def interrupted(self, message: str) -> SendInterrupted:
        self.commit(final=True)
        return SendInterrupted(message, self.finish())

    def commit(self, final: bool = False) -> None:
        """Count the delivered records, in line order (``final``: all delivered ones, skipping the rest)."""
        ids, first_line = [], self.line_done
        while self.window and (self.window[0].done or final):
            entry = self.window.popleft()
            if not entry.done:
                continue
            ids.append(entry.event_id)
            if entry.kind == "row":
                self.result.csv_rows += 1
            else:
                self.result.malformed_rows += 1
                self.result.oversize_rows += entry.kind == "oversize"
            self.line_done = entry.line
        if ids:
            text = "\n".join(ids) + "\n"
            self.ids_digest.update(text.encode())
            if self.ids_file:
                self.ids_file.write(text)
            self.bar.update(self.line_done - first_line)

    def finish(self) -> ProduceResult:
        result, reader = self.result, self.reader
        result.seconds = round(time.perf_counter() - self.started, 3)
        result.records_per_second = round(result.records_sent / result.seconds, 1) if result.seconds else 0.0
        result.per_shard = dict(sorted(self.per_shard.items()))
        result.blank_lines = reader.blank_lines
        result.event_ids_sha256 = self.ids_digest.hexdigest()
        result.wait_seconds = round(result.wait_seconds, 3)
        return result


def produce_file(
    path: str | Path,
    *,
    stream_name: str,
    kinesis,
    progress: bool = True,
    max_retry_seconds: float = 120.0,
    batch_size: int = MAX_RECORDS_PER_CALL,
    max_batch_bytes: int = MAX_BYTES_PER_CALL,
    event_ids_path: str | Path | None = None,
    produced_at: datetime | str | None = None,
) -> ProduceResult:
    """Send every line of ``path`` to ``stream_name`` (``kinesis``: a boto3 Kinesis client) and return
    the counts. ``event_ids_path``: a file to write the delivered event ids to, one per line, in line
    order. Raises ``HeaderError`` before sending anything if the header is wrong, ``DeliveryError`` if
    a record is still undelivered ``max_retry_seconds`` after its first failure."""
    with _Send(path, stream_name, kinesis, max_retry_seconds=max_retry_seconds, batch_size=batch_size,
               max_batch_bytes=max_batch_bytes, event_ids_path=event_ids_path, progress=progress,
               produced_at=produced_at) as send:  # reads the header: HeaderError before sending anything
        while call := send.next_call():  # failed entries first (oldest failure first), then new records
            send.wait_for_pace(len(call))  # paced once throttling shows up
            failed = send.put_records(call)  # one PutRecords call: the entries it did not take
            send.requeue(call, failed)  # into the next calls; back off if nothing got through
            send.commit()  # count what was delivered, in line order
    return send.finish()
