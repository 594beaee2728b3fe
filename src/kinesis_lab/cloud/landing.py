"""Reading back what Firehose wrote to S3, and reconciling it against what the producer sent."""

from __future__ import annotations

import gzip
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kinesis_lab.cloud.content import ContentIds, parse_record
from kinesis_lab.cloud.progress import progress_bar


@dataclass
class LandedObject:
    key: str
    size: int
    records: int
    unparsed_lines: int


@dataclass
class Landing:
    objects: list[LandedObject] = field(default_factory=list)
    event_ids: Counter = field(default_factory=Counter)  # with the records recognised by content
    unparsed_lines: int = 0
    by_content: int = 0  # records without event_id, recognised by content (``kinesis_lab.cloud.content``)

    @property
    def records(self) -> int:
        return sum(o.records for o in self.objects)


def read_object_lines(body: bytes, key: str) -> list[bytes]:
    if key.endswith(".gz"):
        body = gzip.decompress(body)
    return [line for line in body.split(b"\n") if line.strip()]


def read_landing(s3, bucket: str, prefix: str, seen: dict[str, LandedObject] | None = None,
                 event_ids: Counter | None = None, content: ContentIds | None = None,
                 contents: Counter | None = None) -> Landing:
    """List every object under ``prefix`` and count its JSON lines and event ids. Objects already in ``seen``
    (key -> LandedObject) are not downloaded again, so polling costs one read per new object (``event_ids``
    and ``contents`` carry the counts of those between polls). With ``content`` (the CSV's rows), rows
    without an event id (another producer's) are recognised by content and counted under the row's id."""
    seen = {} if seen is None else seen
    ids = Counter() if event_ids is None else event_ids
    anonymous = Counter() if contents is None else contents  # content key -> copies, for rows without an id
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"] in seen:
                continue
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            records, unparsed = 0, 0
            for line in read_object_lines(body, item["Key"]):
                records += 1
                event_id, key = parse_record(line)
                if event_id is not None:
                    ids[event_id] += 1
                elif key is not None and content is not None:
                    anonymous[key] += 1
                else:
                    unparsed += 1
            seen[item["Key"]] = LandedObject(item["Key"], item["Size"], records, unparsed)
    objects = sorted(seen.values(), key=lambda o: o.key)
    landing = Landing(objects=objects, event_ids=Counter(ids),
                      unparsed_lines=sum(o.unparsed_lines for o in objects))
    if anonymous:
        recognised, unknown = content.attribute(anonymous)
        landing.event_ids.update(recognised)
        landing.by_content, landing.unparsed_lines = sum(recognised.values()), landing.unparsed_lines + unknown
    return landing


def wait_for_landing(s3, bucket: str, prefix: str, expected_ids: set[str], timeout: float,
                     poll: float = 1.0, on_progress: Callable[[int], None] | None = None,
                     progress: bool | str = False, content: ContentIds | None = None) -> Landing:
    """Poll S3 until every expected event id has landed, or ``timeout`` seconds passed (then return what
    landed: the caller reports what is missing). ``on_progress(found)`` is called after every poll;
    ``progress`` shows a bar (``True``: "event ids in S3", a string: that description) that a saved
    notebook keeps in its final state (``kinesis_lab.cloud.progress``); ``content``: see ``read_landing``."""
    if progress:
        desc = progress if isinstance(progress, str) else "event ids in S3"
        with progress_bar(len(expected_ids), desc, unit="rec") as bar:
            def both(found: int) -> None:
                bar.set(found)
                if on_progress:
                    on_progress(found)

            return wait_for_landing(s3, bucket, prefix, expected_ids, timeout, poll, both, content=content)
    seen: dict[str, LandedObject] = {}
    ids: Counter = Counter()
    contents: Counter = Counter()
    deadline = time.monotonic() + timeout
    while True:
        landing = read_landing(s3, bucket, prefix, seen, ids, content, contents)
        found = len(expected_ids.intersection(landing.event_ids))
        if on_progress:
            on_progress(found)
        if found == len(expected_ids) or time.monotonic() > deadline:
            return landing
        time.sleep(poll)


def reconcile(expected_ids: Iterable[str], landing: Landing) -> dict:
    """Every id sent is in S3, none twice, nothing unknown: the figures for the run summary."""
    expected = set(expected_ids)
    landed = landing.event_ids
    return {
        "s3_objects": len(landing.objects),
        "s3_records": landing.records,
        "s3_unparsed_lines": landing.unparsed_lines,
        "s3_records_recognised_by_content": landing.by_content,
        "missing_event_ids": len(expected - set(landed)),
        "s3_duplicate_event_ids": sum(1 for n in landed.values() if n > 1),
        "unexpected_event_ids": len(set(landed) - expected),
    }
