"""The delivery loop: Kinesis shards -> buffer -> S3 objects, for every Kinesis-sourced delivery stream.

One ``DeliveryLoop`` per delivery stream (keyed by ARN + CreateTimestamp). Each poll:

1. list + describe the delivery streams (a deleted one, or a moto reset, ends its delivery loop);
2. read every shard (``get_records``), starting at the delivery stream's CreateTimestamp the first time
   (AWS reads from LATEST at creation: records put earlier are not delivered), after the checkpoint
   on later runs;
3. buffer; write an object when the size or interval hint is reached;
4. advance the checkpoint only after the object is in S3. A failed write blocks that delivery stream
   and is retried with backoff (AWS retries for up to 24 h); its records stay in Kinesis meanwhile.

Polls come every ``poll_interval`` (0.2 s) while there is work, and less often, up to every second, after a few
polls without any (``next_poll_in``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kinesis_lab.cloud import prefixes as expressions
from kinesis_lab.cloud.aws import error_code
from kinesis_lab.cloud.firehose_config import validate_delivery_config
from kinesis_lab.local.firehose.checkpoints import CheckpointStore, stream_key
from kinesis_lab.local.firehose.delivery import (
    Buffer,
    DeliverySettings,
    KinesisRecord,
    error_object_body,
    last_positions,
    object_body,
    record_bytes,
)

log = logging.getLogger("local_firehose")
AWS_ERRORS = (ClientError, BotoCoreError)
CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
MAX_BACKOFF_SECONDS = 30.0
SHARD_REFRESH_SECONDS = 1.0


def _code(exc: Exception) -> str:
    return error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__


class RateLimitedLog:
    """Log a repeating problem once per ``every`` seconds, not at every poll."""

    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.every, self.clock, self.last = every, clock, {}

    def warning(self, key: str, message: str) -> None:
        now = self.clock()
        if now - self.last.get(key, -self.every) >= self.every:
            self.last[key] = now
            log.warning(message)


@dataclass
class ShardReader:
    iterator: str | None = None
    last_read: str | None = None  # sequence number of the last record put in the buffer
    finished: bool = False  # a closed shard read to its end


@dataclass
class Batch:
    settings: DeliverySettings
    records: list[KinesisRecord]


@dataclass
class DeliveryLoop:
    """Delivery of one delivery stream."""

    settings: DeliverySettings
    checkpoints: CheckpointStore
    session: boto3.Session
    warn: RateLimitedLog
    clock: Callable[[], float] = time.monotonic
    shards: dict[str, ShardReader] = field(default_factory=dict)
    pending: deque = field(default_factory=deque)  # full batches waiting to be written, in order
    retry_at: float = 0.0
    failures: int = 0
    shards_listed_at: float | None = None
    _s3: object | None = None
    _s3_expires: datetime | None = None

    def __post_init__(self) -> None:
        self.key = stream_key(self.settings.arn, self.settings.create_timestamp)
        self.buffer = Buffer(self.settings.size_bytes, self.settings.interval_seconds, self.clock)
        self.kinesis = self.session.client("kinesis", config=CLIENT_CONFIG)

    # --- configuration ---------------------------------------------------------------------------
    def update(self, settings: DeliverySettings) -> None:
        """A new destination version: what is buffered goes out under the old one."""
        if self.buffer.records:
            self.pending.append(Batch(self.settings, self.buffer.take()))
        self.settings = settings
        self.buffer = Buffer(settings.size_bytes, settings.interval_seconds, self.clock)
        self._s3 = None
        log.info("delivery stream %s now at version %s", settings.name, settings.version)

    # --- reading ---------------------------------------------------------------------------------
    def poll(self) -> bool:
        """Read, buffer, write; True if it has work (records read now, buffered or waiting to be written)."""
        if not self.write_pending():
            return True  # a write is failing: stop reading until it succeeds
        if self.shards_listed_at is None or self.clock() - self.shards_listed_at >= SHARD_REFRESH_SECONDS:
            self._list_shards()
        read = sum(self._read_shard(shard_id, reader) for shard_id, reader in self.shards.items()
                   if not reader.finished)  # fmt: skip
        if self.buffer.due():
            self.pending.append(Batch(self.settings, self.buffer.take()))
        self.write_pending()
        return bool(read or self.buffer.records or self.pending)

    def _list_shards(self) -> None:
        name = self.settings.stream_name
        try:
            kwargs: dict = {"StreamName": name}
            while True:
                page = self.kinesis.list_shards(**kwargs)
                for shard in page.get("Shards", []):
                    self.shards.setdefault(shard["ShardId"], ShardReader())
                if not page.get("NextToken"):
                    break
                kwargs = {"NextToken": page["NextToken"]}
            self.shards_listed_at = self.clock()
        except AWS_ERRORS as exc:
            self.warn.warning(
                f"shards:{self.key}", f"cannot list shards of stream {name} ({_code(exc)}): {exc}"
            )

    def _start_iterator(self, shard_id: str, reader: ShardReader) -> str:
        """After what was read (or delivered), else at the delivery stream's creation time."""
        after = reader.last_read or self.checkpoints.get(self.key, shard_id)
        # by StreamName: moto's get_records breaks on iterators asked for by StreamARN only
        kwargs = {"StreamName": self.settings.stream_name, "ShardId": shard_id}
        if after:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after)
        else:
            kwargs.update(ShardIteratorType="AT_TIMESTAMP", Timestamp=self.settings.create_timestamp)
        return self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"]

    def _read_shard(self, shard_id: str, reader: ShardReader) -> int:
        """Read one page of a shard into the buffer; the number of records read."""
        try:
            if reader.iterator is None:
                reader.iterator = self._start_iterator(shard_id, reader)
            page = self.kinesis.get_records(ShardIterator=reader.iterator, Limit=10000)
        except AWS_ERRORS as exc:
            reader.iterator = None  # expired or stream gone: start again from last_read next time
            if _code(exc) != "ExpiredIteratorException":
                self.warn.warning(
                    f"read:{self.key}",  # one line per delivery stream, not per shard
                    f"cannot read {self.settings.stream_name}/{shard_id} ({_code(exc)}): {exc}",
                )
            return 0
        for item in page.get("Records", []):
            record = KinesisRecord(
                shard_id,
                item["SequenceNumber"],
                item["Data"],
                item["ApproximateArrivalTimestamp"].astimezone(UTC),
            )
            reader.last_read = record.sequence_number
            full = self.buffer.add(record, len(record_bytes(record, self.settings.append_delimiter)))
            if full:
                self.pending.append(Batch(self.settings, full))
        reader.iterator = page.get("NextShardIterator")
        reader.finished = reader.iterator is None
        return len(page.get("Records", []))

    # --- writing ---------------------------------------------------------------------------------
    def write_pending(self) -> bool:
        """Write waiting batches in order; False if one failed (it is retried after a backoff)."""
        while self.pending:
            if self.clock() < self.retry_at:
                return False
            batch = self.pending[0]
            try:
                self._write(batch)
            except AWS_ERRORS + (expressions.ExpressionError,) as exc:
                self.failures += 1
                backoff = min(2 ** (self.failures - 1), MAX_BACKOFF_SECONDS)
                self.retry_at = self.clock() + backoff
                log.error(
                    "delivery stream %s: cannot write %d records to s3://%s (%s: %s); retry %d in %.0f s",
                    batch.settings.name, len(batch.records), batch.settings.bucket, _code(exc), exc,
                    self.failures, backoff,
                )  # fmt: skip
                return False
            self.pending.popleft()
            self.failures, self.retry_at = 0, 0.0
            self.checkpoints.advance(self.key, last_positions(batch.records))
        return True

    def _write(self, batch: Batch) -> None:
        s = batch.settings
        oldest = min(r.arrival for r in batch.records)
        if s.failure:
            key = expressions.error_object_key(
                s.error_prefix, s.prefix, error_output_type=s.failure.output_type,
                stream_name=s.name, version=s.version, when=oldest,
            )  # fmt: skip
            body = error_object_body(batch.records, s.failure, attempt_ended=datetime.now(UTC))
        else:
            key = expressions.object_key(
                s.prefix, stream_name=s.name, version=s.version, when=oldest, compression=s.compression
            )
            body = object_body(batch.records, append_delimiter=s.append_delimiter, compression=s.compression)
        self._s3_client(s).put_object(Bucket=s.bucket, Key=key, Body=body)
        what = f"{s.failure.output_type} " if s.failure else ""
        log.info(
            "delivered %ss3://%s/%s records=%d bytes=%d", what, s.bucket, key, len(batch.records), len(body)
        )

    def _s3_client(self, settings: DeliverySettings):
        """An S3 client acting as the delivery stream's role (so IAM applies when moto enforces it)."""
        now = datetime.now(UTC)
        if self._s3 is not None and (self._s3_expires is None or now < self._s3_expires):
            return self._s3
        if not settings.role_arn:
            self._s3, self._s3_expires = self.session.client("s3", config=CLIENT_CONFIG), None
            return self._s3
        sts = self.session.client("sts", config=CLIENT_CONFIG)
        creds = sts.assume_role(  # Firehose passes the account id as external id (the confused-deputy guard)
            RoleArn=settings.role_arn, RoleSessionName=f"local-firehose-{settings.name}"[:64],
            ExternalId=settings.role_arn.split(":")[4],
        )["Credentials"]
        self._s3 = self.session.client(
            "s3",
            config=CLIENT_CONFIG,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
        self._s3_expires = creds["Expiration"].astimezone(UTC) - timedelta(minutes=5)
        return self._s3

    def drain(self, deadline: float) -> bool:
        """Write everything buffered, retrying until ``deadline`` (monotonic). True if all was written."""
        if self.buffer.records:
            self.pending.append(Batch(self.settings, self.buffer.take()))
        while self.pending:
            self.retry_at = 0.0
            if self.write_pending():
                return True
            if time.monotonic() + 0.5 > deadline:
                return False
            time.sleep(0.5)
        return True


# Nothing read, buffered or pending for IDLE_POLLS polls in a row: the service polls less often, up to every
# IDLE_POLL_INTERVAL s (a record put then lands at most that much later; any work brings the interval back).
# Each poll is a few requests to moto per delivery stream and shard: ~0.08 of a core for one idle stack.
IDLE_POLLS = 5
IDLE_POLL_INTERVAL = 1.0


def next_poll_in(poll_interval: float, idle_polls: int) -> float:
    """Seconds to the next poll after ``idle_polls`` polls in a row without work: ``poll_interval``, then
    doubling from the IDLE_POLLS-th idle poll on, to at most IDLE_POLL_INTERVAL (never below poll_interval)."""
    if idle_polls < IDLE_POLLS:
        return poll_interval
    doubled = poll_interval * 2 ** min(idle_polls - IDLE_POLLS + 1, 16)
    return max(poll_interval, min(doubled, IDLE_POLL_INTERVAL))


class Service:
    """Finds delivery streams and runs a DeliveryLoop for each."""

    def __init__(
        self,
        state_dir: Path,
        *,
        session: boto3.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.checkpoints = CheckpointStore(Path(state_dir))
        self.session = session or boto3.Session()
        self.firehose = self.session.client("firehose", config=CLIENT_CONFIG)
        self.clock = clock
        self.warn = RateLimitedLog(clock=clock)
        self.loops: dict[str, DeliveryLoop] = {}  # by delivery stream name
        self.rejected: set[str] = set()  # configurations already logged as invalid
        self.paused: set[str] = set()  # names of delivery streams whose configuration is invalid

    def _describe_all(self) -> tuple[list[dict], bool]:
        """Descriptions of every delivery stream, and whether the listing is complete."""
        names: list[str] = []
        kwargs: dict = {}
        while True:
            page = self.firehose.list_delivery_streams(**kwargs)
            names += page.get("DeliveryStreamNames", [])
            if not page.get("HasMoreDeliveryStreams") or not names:
                break
            kwargs = {"ExclusiveStartDeliveryStreamName": names[-1]}
        descriptions, complete = [], True
        for name in names:
            try:
                descriptions.append(
                    self.firehose.describe_delivery_stream(DeliveryStreamName=name)[
                        "DeliveryStreamDescription"
                    ]
                )
            except AWS_ERRORS as exc:
                if _code(exc) != "ResourceNotFoundException":
                    complete = False
                    self.warn.warning(f"describe:{name}", f"cannot describe delivery stream {name}: {exc}")
        return descriptions, complete

    def refresh(self) -> None:
        """Start, update or stop delivery loops to match the delivery streams that exist now."""
        try:
            descriptions, complete = self._describe_all()
        except AWS_ERRORS as exc:
            self.warn.warning("list", f"cannot list delivery streams ({_code(exc)}): {exc}")
            return
        live: dict[str, DeliverySettings] = {}
        self.paused = set()
        for desc in descriptions:
            settings = DeliverySettings.from_description(desc)
            if settings is None or desc.get("DeliveryStreamStatus") != "ACTIVE":
                continue
            problems = validate_delivery_config({"ExtendedS3DestinationConfiguration": settings.destination})
            if problems:
                self.paused.add(settings.name)  # kept (with its checkpoints) but not read
                version_key = f"{stream_key(settings.arn, settings.create_timestamp)}#{settings.version}"
                if version_key not in self.rejected:
                    self.rejected.add(version_key)
                    log.error(
                        "delivery stream %s is not delivered: real Firehose would have rejected it: %s",
                        settings.name, "; ".join(problems),
                    )  # fmt: skip
                continue
            live[settings.name] = settings
        for name, loop in list(self.loops.items()):
            new = live.get(name)
            if new is None and (name in self.paused or not complete):
                continue  # paused, or unknown this time: keep it
            if new is None or stream_key(new.arn, new.create_timestamp) != loop.key:
                del self.loops[name]
                log.info("delivery stream %s is gone (deleted or moto reset): stopped reading it", name)
            elif new.version != loop.settings.version:
                loop.update(new)
        for name, settings in live.items():
            if name not in self.loops:
                self.loops[name] = DeliveryLoop(
                    settings, self.checkpoints, self.session, self.warn, self.clock
                )
                log.info(
                    "delivering %s: stream %s -> s3://%s/%s", name, settings.stream_name, settings.bucket,
                    settings.prefix,
                )  # fmt: skip
        if complete:
            live_keys = {p.key for p in self.loops.values()}
            for key in self.checkpoints.keys():
                if key not in live_keys:
                    self.checkpoints.forget(key)

    def poll(self) -> bool:
        """One poll of every delivery stream; True if one of them has work (see DeliveryLoop.poll)."""
        self.refresh()
        busy = False
        for name, loop in list(self.loops.items()):
            if name in self.paused:
                continue
            try:
                busy = loop.poll() or busy
            except AWS_ERRORS as exc:  # never let one delivery stream stop the others
                self.warn.warning(f"poll:{loop.key}", f"delivery stream {loop.settings.name}: {exc}")
                busy = True
        return busy

    def run(self, stop: threading.Event, poll_interval: float = 0.2) -> None:
        log.info("local Firehose service started (poll every %.1f s, up to %.1f s when idle)", poll_interval,
                 max(poll_interval, IDLE_POLL_INTERVAL))  # fmt: skip
        idle_polls = 0
        while not stop.is_set():
            busy = True
            try:
                busy = self.poll()
            except Exception as exc:  # a bug or an odd answer must not stop delivery for good
                self.warn.warning(f"crash:{type(exc).__name__}", f"poll failed ({type(exc).__name__}): {exc}")
            idle_polls = 0 if busy else idle_polls + 1
            stop.wait(next_poll_in(poll_interval, idle_polls))

    def shutdown(self, budget: float = 3.0) -> bool:
        """Deliver everything buffered (within ``budget`` seconds). True if nothing was left behind."""
        deadline = time.monotonic() + budget
        ok = all([loop.drain(deadline) for loop in self.loops.values()])
        if not ok:
            log.warning(
                "stopped with undelivered records: they stay in Kinesis and are read again at restart"
            )
        return ok
