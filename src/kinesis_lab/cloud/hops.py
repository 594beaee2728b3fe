"""Reading what each hop of the pipeline holds, counted by event id: the Kinesis stream (every shard from
TRIM_HORIZON), the S3 landing prefix, and the pipeline's tables (through a reader the caller gives: the
local warehouse, or Unity Catalog). A hop whose resource is gone is unchecked, with a note."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import ClientError

from kinesis_lab.cloud.aws import error_code
from kinesis_lab.cloud.config import BRONZE_TABLE, QUARANTINE_TABLE, SILVER_TABLE
from kinesis_lab.cloud.content import ContentIds, parse_record

_STREAM_GONE = {"ResourceNotFoundException"}
_BUCKET_GONE = {"NoSuchBucket", "404"}
_READ_RETRY = {"ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException"}
TableReader = Callable[[str, list[str]], object]  # (table, columns) -> pandas DataFrame, or None if missing


@dataclass
class HopData:
    """What one hop holds: event id -> copies, plus records/lines it holds without a usable event id."""

    name: str
    ids: Counter | None = None  # None: the hop was not checked
    no_id: int = 0
    note: str = ""
    by_content: int = 0  # records without event_id recognised by content (counted in ``ids``)

    @property
    def checked(self) -> bool:
        return self.ids is not None



def _call(fn, *, tries: int = 8, **kwargs):
    """A read call, retried with backoff while throttled (GetRecords: 5 calls/s per shard on AWS)."""
    for attempt in range(tries):
        try:
            return fn(**kwargs)
        except ClientError as exc:
            if error_code(exc) not in _READ_RETRY or attempt == tries - 1:
                raise
            time.sleep(min(2.0, 0.2 * 2**attempt))
    raise AssertionError("unreachable")


def read_stream(kinesis, stream_name: str, content: ContentIds | None = None) -> HopData:
    """Every record of every shard of the stream (by StreamName, from TRIM_HORIZON), counted by event id
    (with ``content``, rows without one are recognised by content). A stream that does not exist gives an
    unchecked hop with a note."""
    hop, anonymous = HopData("kinesis", Counter()), Counter()
    try:
        shards, kwargs = [], {"StreamName": stream_name}
        while True:
            page = _call(kinesis.list_shards, **kwargs)
            shards += [s["ShardId"] for s in page.get("Shards", [])]
            if not page.get("NextToken"):
                break
            kwargs = {"NextToken": page["NextToken"]}
        for shard_id in shards:
            iterator = _call(
                kinesis.get_shard_iterator,
                StreamName=stream_name,
                ShardId=shard_id,
                ShardIteratorType="TRIM_HORIZON",
            )["ShardIterator"]
            while iterator:
                page = _call(kinesis.get_records, ShardIterator=iterator, Limit=10000)
                for record in page.get("Records", []):
                    event_id, key = parse_record(record["Data"])
                    if event_id is not None:
                        hop.ids[event_id] += 1
                    elif key is not None and content is not None:
                        anonymous[key] += 1
                    else:
                        hop.no_id += 1
                iterator = page.get("NextShardIterator")
                # an empty page at the tip of an open shard: the end (AWS may return empty pages
                # while still behind the tip; MillisBehindLatest says so)
                if not page.get("Records") and not page.get("MillisBehindLatest"):
                    break
    except ClientError as exc:
        if error_code(exc) not in _STREAM_GONE:
            raise
        return HopData("kinesis", None, note=f"stream {stream_name!r} does not exist (deleted by teardown?)")
    if anonymous:
        recognised, unknown = content.attribute(anonymous)
        hop.ids.update(recognised)
        hop.by_content, hop.no_id = sum(recognised.values()), hop.no_id + unknown
    return hop


def stream_retention_hours(kinesis, stream_name: str) -> int | None:
    try:
        summary = kinesis.describe_stream_summary(StreamName=stream_name)["StreamDescriptionSummary"]
    except ClientError:
        return None
    return summary.get("RetentionPeriodHours")


def read_s3(s3, bucket: str, prefix: str, content: ContentIds | None = None) -> HopData:
    """The event ids of every JSON line under the static part of ``prefix`` (see landing.read_landing)."""
    from kinesis_lab.cloud.landing import read_landing
    from kinesis_lab.cloud.prefixes import static_prefix

    try:
        landing = read_landing(s3, bucket, static_prefix(prefix), content=content)
    except ClientError as exc:
        if error_code(exc) not in _BUCKET_GONE:
            raise
        return HopData("s3", None, note=f"bucket {bucket!r} does not exist (deleted by teardown?)")
    return HopData(
        "s3",
        Counter(landing.event_ids),
        no_id=landing.unparsed_lines,
        note=f"{len(landing.objects)} objects under s3://{bucket}/{static_prefix(prefix)}",
        by_content=landing.by_content,
    )


def read_tables(read: TableReader) -> tuple[HopData, HopData, dict, dict]:
    """(bronze hop, silver hop, event id -> rows in silver_events, event id -> [rules of each quarantine
    row]) from the pipeline's tables, read with ``read(name, columns)`` (None: the table does not exist
    yet): unchecked hops then."""
    bronze = HopData("bronze", None, note="no bronze_events table yet: run the pipeline (notebook 07)")
    silver = HopData("silver", None, note="no silver tables yet: run the pipeline (notebook 07/08)")
    in_silver: Counter = Counter()
    quarantined: dict[str, list[tuple[str, ...]]] = {}
    frame = read(BRONZE_TABLE, ["event_id", "_parse_ok"])
    if frame is not None:
        parsed = frame["_parse_ok"].fillna(False).astype(bool) & frame["event_id"].notna()
        bronze = HopData("bronze", Counter(frame.loc[parsed, "event_id"]), no_id=int((~parsed).sum()))
    events, quarantine = read(SILVER_TABLE, ["event_id"]), read(QUARANTINE_TABLE, ["event_id", "broken_rules"])
    if events is not None and quarantine is not None:
        in_silver.update(events["event_id"].dropna())
        no_id = int(events["event_id"].isna().sum())
        for event_id, rules in zip(quarantine["event_id"], quarantine["broken_rules"], strict=True):
            if event_id is None or event_id != event_id:  # None or NaN
                no_id += 1
                continue
            quarantined.setdefault(event_id, []).append(tuple(rules) if rules is not None else ())
        total = Counter(in_silver)
        total.update({k: len(v) for k, v in quarantined.items()})
        silver = HopData("silver", total, no_id=no_id)
    return bronze, silver, dict(in_silver), quarantined
