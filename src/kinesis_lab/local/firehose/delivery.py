"""The pure parts of delivery: what a delivery stream is configured to do, buffering, object bodies.

No AWS calls here, so every rule can be unit-tested with fixed inputs and an injectable clock.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

MIB = 1024 * 1024
DEFAULT_SIZE_MB = 5  # AWS defaults when BufferingHints are not given
DEFAULT_INTERVAL_SECONDS = 300
SUPPORTED_COMPRESSION = ("UNCOMPRESSED", "GZIP")


@dataclass(frozen=True)
class KinesisRecord:
    shard_id: str
    sequence_number: str
    data: bytes
    arrival: datetime  # ApproximateArrivalTimestamp from Kinesis


@dataclass(frozen=True)
class Failure:
    """Why records go to the error prefix instead of the destination prefix."""

    output_type: str  # the value of !{firehose:error-output-type}
    code: str
    message: str
    lambda_arn: str | None = None


@dataclass(frozen=True)
class DeliverySettings:
    """What describe_delivery_stream says, reduced to what delivery needs."""

    name: str
    arn: str
    version: str
    create_timestamp: datetime
    stream_arn: str
    role_arn: str
    bucket: str
    prefix: str
    error_prefix: str | None
    size_bytes: int
    interval_seconds: int
    compression: str
    append_delimiter: bool
    failure: Failure | None  # set when the local service cannot do what is configured
    destination: dict = field(repr=False, compare=False, default_factory=dict)

    @property
    def stream_name(self) -> str:
        return self.stream_arn.split("/", 1)[-1]

    @classmethod
    def from_description(cls, desc: dict) -> DeliverySettings | None:
        """Settings of a Kinesis-sourced delivery stream to S3, or None for any other kind."""
        if desc.get("DeliveryStreamType") != "KinesisStreamAsSource":
            return None
        source = desc.get("Source", {}).get("KinesisStreamSourceDescription", {})
        destinations = desc.get("Destinations") or [{}]
        dest = destinations[0].get("ExtendedS3DestinationDescription") or destinations[0].get(
            "S3DestinationDescription"
        )
        if not dest or not source.get("KinesisStreamARN"):
            return None
        hints = dest.get("BufferingHints") or {}
        compression = dest.get("CompressionFormat") or "UNCOMPRESSED"
        return cls(
            name=desc["DeliveryStreamName"],
            arn=desc["DeliveryStreamARN"],
            version=str(desc.get("VersionId", "1")),
            create_timestamp=desc["CreateTimestamp"].astimezone(UTC),
            stream_arn=source["KinesisStreamARN"],
            role_arn=dest.get("RoleARN", ""),
            bucket=dest["BucketARN"].split(":::", 1)[-1],
            prefix=dest.get("Prefix") or "",
            error_prefix=dest.get("ErrorOutputPrefix") or None,
            size_bytes=int(hints.get("SizeInMBs", DEFAULT_SIZE_MB)) * MIB,
            interval_seconds=int(hints.get("IntervalInSeconds", DEFAULT_INTERVAL_SECONDS)),
            compression=compression,
            append_delimiter=_has_processor(dest, "AppendDelimiterToRecord"),
            failure=unsupported_feature(dest),
            destination=dest,
        )


def _enabled_processors(dest: dict) -> list[dict]:
    processing = dest.get("ProcessingConfiguration") or {}
    if processing.get("Enabled") is False:
        return []
    return processing.get("Processors") or []


def _has_processor(dest: dict, processor_type: str) -> bool:
    return any(p.get("Type") == processor_type for p in _enabled_processors(dest))


def unsupported_feature(dest: dict) -> Failure | None:
    """A configured feature the local service cannot run: its records go to the error prefix."""
    for processor in _enabled_processors(dest):
        kind = processor.get("Type")
        if kind == "Lambda":
            params = {
                p.get("ParameterName"): p.get("ParameterValue") for p in processor.get("Parameters", [])
            }
            return Failure(
                "processing-failed",
                "Lambda.NotSupportedLocally",
                "The local Firehose service cannot invoke Lambda processors; the record was not transformed.",
                lambda_arn=params.get("LambdaArn"),
            )
        if kind != "AppendDelimiterToRecord":
            return Failure(
                "processing-failed",
                "Processor.NotSupportedLocally",
                f"The local Firehose service cannot run the {kind} processor; the record was not processed.",
            )
    if (dest.get("DataFormatConversionConfiguration") or {}).get("Enabled"):
        return Failure(
            "format-conversion-failed",
            "DataFormatConversion.NotSupportedLocally",
            "The local Firehose service cannot convert record formats; the record was not converted.",
        )
    if (dest.get("DynamicPartitioningConfiguration") or {}).get("Enabled"):
        return Failure(
            "processing-failed",
            "DynamicPartitioning.NotSupportedLocally",
            "The local Firehose service does not support dynamic partitioning; the record was not partitioned.",
        )
    compression = dest.get("CompressionFormat") or "UNCOMPRESSED"
    if compression not in SUPPORTED_COMPRESSION:
        return Failure(
            "processing-failed",
            "Compression.NotSupportedLocally",
            f"The local Firehose service cannot write {compression} objects (only UNCOMPRESSED or GZIP).",
        )
    return None


class Buffer:
    """Records waiting for delivery; a batch is due when its bytes reach the size hint or its oldest
    record has waited the interval (0 = at every poll), whichever comes first."""

    def __init__(self, size_bytes: int, interval_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.size_bytes = size_bytes
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.records: list[KinesisRecord] = []
        self.bytes = 0
        self.oldest_added_at: float | None = None

    def add(self, record: KinesisRecord, size: int) -> list[KinesisRecord] | None:
        """Buffer one record (``size`` = bytes it adds); returns a full batch when the size hint is reached."""
        if not self.records:
            self.oldest_added_at = self.clock()
        self.records.append(record)
        self.bytes += size
        return self.take() if self.bytes >= self.size_bytes else None

    def due(self) -> bool:
        if not self.records:
            return False
        return self.clock() - self.oldest_added_at >= self.interval_seconds

    def take(self) -> list[KinesisRecord]:
        batch, self.records, self.bytes, self.oldest_added_at = self.records, [], 0, None
        return batch


def record_bytes(record: KinesisRecord, append_delimiter: bool) -> bytes:
    return record.data + b"\n" if append_delimiter else record.data


def object_body(records: list[KinesisRecord], *, append_delimiter: bool, compression: str) -> bytes:
    """Records concatenated as they are (plus "\\n" with AppendDelimiterToRecord), gzipped for GZIP."""
    body = b"".join(record_bytes(r, append_delimiter) for r in records)
    # mtime=0: the same records always give the same bytes
    return gzip.compress(body, mtime=0) if compression == "GZIP" else body


def millis(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def error_record(
    record: KinesisRecord, failure: Failure, *, attempt_ended: datetime, attempts_made: int = 0
) -> dict:
    """AWS's JSON document for a record that failed processing (see 'Data Transformation Failure Handling')."""
    doc = {
        "attemptsMade": attempts_made,
        "arrivalTimestamp": millis(record.arrival),
        "errorCode": failure.code,
        "errorMessage": failure.message,
        "attemptEndingTimestamp": millis(attempt_ended),
        "rawData": base64.b64encode(record.data).decode("ascii"),
    }
    if failure.lambda_arn:
        doc["lambdaArn"] = failure.lambda_arn
    return doc


def error_object_body(records: list[KinesisRecord], failure: Failure, *, attempt_ended: datetime) -> bytes:
    """One error document per line."""
    lines = (json.dumps(error_record(r, failure, attempt_ended=attempt_ended)) + "\n" for r in records)
    return "".join(lines).encode()


def last_positions(records: list[KinesisRecord]) -> dict[str, str]:
    """Highest sequence number per shard in a batch (records of one shard arrive in order)."""
    positions: dict[str, str] = {}
    for r in records:
        positions[r.shard_id] = r.sequence_number
    return positions
