"""The PutRecords limits: at most 500 records and 5 MiB (data + partition keys) per call, 1 MiB per record.

``CallBuilder`` holds the one implementation of these limits: the producer fills its calls with it, and
``iter_batches`` groups any records with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from kinesis_lab.cloud.records import MAX_RECORD_BYTES, Record

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024  # data + partition keys


class RecordTooLargeError(ValueError):
    """A record over the 1 MiB PutRecords limit reached the batcher."""


class CallBuilder:
    """One PutRecords call being filled: at most ``max_records`` entries and ``max_bytes`` (data +
    partition keys), no record over 1 MiB. ``items`` are the entries (records, or what wraps them)."""

    def __init__(self, max_records: int = MAX_RECORDS_PER_CALL, max_bytes: int = MAX_BYTES_PER_CALL):
        if not 1 <= max_records <= MAX_RECORDS_PER_CALL:
            raise ValueError(f"max_records must be 1..{MAX_RECORDS_PER_CALL} (the PutRecords limit), "
                             f"got {max_records}")
        if not 1 <= max_bytes <= MAX_BYTES_PER_CALL:
            raise ValueError(f"max_bytes must be 1..{MAX_BYTES_PER_CALL} (5 MiB, the PutRecords limit), "
                             f"got {max_bytes}")
        self.max_records, self.max_bytes = max_records, max_bytes
        self.items: list = []
        self.size = 0

    def check(self, record: Record) -> None:
        """``RecordTooLargeError`` if ``record`` could never be sent (over 1 MiB, or over ``max_bytes``)."""
        size = record.size
        if size > MAX_RECORD_BYTES or size > self.max_bytes:
            raise RecordTooLargeError(
                f"line {record.line}: record of {size} bytes (data + partition key) is over the "
                f"{min(MAX_RECORD_BYTES, self.max_bytes)}-byte limit per record"
            )

    def full(self, limit: int | None = None) -> bool:
        """No room for one more entry (``limit``: a lower count for this call)."""
        return len(self.items) >= min(self.max_records, limit or self.max_records)

    def fits(self, record: Record) -> bool:
        """``record`` fits in the bytes left (a checked record always fits in an empty call)."""
        return self.size + record.size <= self.max_bytes

    def add(self, item, record: Record) -> None:
        self.items.append(item)
        self.size += record.size

    def take(self) -> list:
        """The call's entries; the builder starts a new call."""
        items, self.items, self.size = self.items, [], 0
        return items


def iter_batches(records: Iterable[Record], max_records: int = MAX_RECORDS_PER_CALL,
                 max_bytes: int = MAX_BYTES_PER_CALL) -> Iterator[list[Record]]:
    """Group records into PutRecords calls: at most ``max_records`` and ``max_bytes`` (data + partition
    keys) each. A record over 1 MiB raises ``RecordTooLargeError`` naming its line."""
    call = CallBuilder(max_records, max_bytes)
    for record in records:
        call.check(record)
        if call.full() or not call.fits(record):
            yield call.take()
        call.add(record, record)
    if call.items:
        yield call.take()
