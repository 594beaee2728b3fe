import gzip
import io
import json
import time
from collections import Counter

import boto3
from waiting import DEADLINE

from kinesis_lab.cloud.landing import (
    LandedObject,
    Landing,
    read_landing,
    reconcile,
    wait_for_landing,
)
from kinesis_lab.cloud.prefixes import static_prefix
from kinesis_lab.cloud.summary import read_summary, reconciliation_problems, update_summary


def lines(*ids):
    return b"".join(json.dumps({"event_id": i}).encode() + b"\n" for i in ids)


def test_static_prefix_stops_at_the_first_expression():
    assert static_prefix("bronze/ingestion_date=!{timestamp:yyyy/MM/dd}/") == "bronze/ingestion_date="
    assert static_prefix("bronze/") == "bronze/"


def test_read_landing_counts_records_in_plain_and_gzip_objects_and_flags_junk(clean_stack):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="landing")
    s3.put_object(Bucket="landing", Key="bronze/a", Body=lines("1", "2"))
    s3.put_object(Bucket="landing", Key="bronze/b.gz", Body=gzip.compress(lines("3", "2")))
    s3.put_object(Bucket="landing", Key="bronze/c", Body=b"not json\n\n")
    s3.put_object(Bucket="landing", Key="other/d", Body=lines("9"))
    landing = read_landing(s3, "landing", "bronze/")
    assert [o.key for o in landing.objects] == ["bronze/a", "bronze/b.gz", "bronze/c"]
    assert landing.records == 5 and landing.unparsed_lines == 1
    assert landing.event_ids == Counter({"1": 1, "2": 2, "3": 1})
    figures = reconcile({"1", "2", "3", "4"}, landing)
    assert figures == {
        "s3_objects": 3,
        "s3_records": 5,
        "s3_unparsed_lines": 1,
        "s3_records_recognised_by_content": 0,
        "missing_event_ids": 1,
        "s3_duplicate_event_ids": 1,
        "unexpected_event_ids": 0,
    }
    done = wait_for_landing(s3, "landing", "bronze/", {"1", "2", "3"}, timeout=DEADLINE)
    assert done.records == 5


def test_wait_for_landing_gives_up_after_the_timeout(clean_stack):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="slow")
    seen = []
    started = time.monotonic()
    landing = wait_for_landing(s3, "slow", "bronze/", {"x"}, timeout=0.3, poll=0.05, on_progress=seen.append)
    assert landing.records == 0 and seen and set(seen) == {0}
    assert time.monotonic() - started < DEADLINE  # it returned instead of waiting for ever


class GrowingS3:
    """A stand-in S3 client whose listing shows one more object per call."""

    def __init__(self, bodies: dict[str, bytes]):
        self.bodies, self.listings = bodies, 0

    def get_paginator(self, _name):
        return self

    def paginate(self, Bucket, Prefix):
        self.listings += 1
        keys = sorted(self.bodies)[: self.listings]
        return [{"Contents": [{"Key": k, "Size": len(self.bodies[k])} for k in keys]}]

    def get_object(self, Bucket, Key):
        return {"Body": io.BytesIO(self.bodies[Key])}


def test_wait_for_landing_progress_bar_and_callback(capsys):
    s3 = GrowingS3({"bronze/a": lines("1", "2"), "bronze/b": lines("3")})
    seen = []
    landing = wait_for_landing(s3, "b", "bronze/", {"1", "2", "3"}, timeout=60, poll=0.01,
                               on_progress=seen.append, progress="ids in S3")
    assert landing.records == 3 and seen == [2, 3]
    err = capsys.readouterr().err  # outside Jupyter the bar is tqdm on stderr
    assert "ids in S3: 100%" in err and "3/3" in err
    wait_for_landing(GrowingS3({"bronze/a": lines("1")}), "b", "bronze/", {"1"}, timeout=60, progress=True)
    assert "event ids in S3: 100%" in capsys.readouterr().err
    wait_for_landing(GrowingS3({"bronze/a": lines("1")}), "b", "bronze/", {"1"}, timeout=60)
    assert capsys.readouterr().err == ""  # no bar unless asked


def test_summary_merges_and_reconciles(tmp_path):
    update_summary(tmp_path, csv_rows=10, malformed_rows=1, records_sent=11)
    update_summary(tmp_path, s3_records=11, bronze_rows=11, silver_rows=9, quarantine_rows=2)
    s = read_summary(tmp_path)
    assert s["csv_rows"] == 10 and s["quarantine_rows"] == 2
    assert reconciliation_problems(s) == []
    s.update(s3_records=10, missing_event_ids=1)
    assert reconciliation_problems(s) == [
        "s3_records 10 != records_sent 11",
        "missing_event_ids = 1 (expected 0)",
        "bronze_rows 11 != s3_records 10",
    ]


def test_landing_dataclasses_sum_records():
    landing = Landing(objects=[LandedObject("a", 1, 2, 0), LandedObject("b", 1, 3, 1)])
    assert landing.records == 5
