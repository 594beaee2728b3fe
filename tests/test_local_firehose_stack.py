"""The local Firehose service of the session stack, end to end: Kinesis records -> S3 objects."""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
import uuid
from datetime import UTC

import pytest

from kinesis_lab import stack
from kinesis_lab.firehose_config import build_delivery_stream_request, create_delivery_stream

pytestmark = pytest.mark.stack

ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/FirehoseToS3Role"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


# --- helpers (also used by test_local_firehose_restart) ----------------------------------------------
def make_source(clients, stream: str, bucket: str | None) -> str:
    """An ON_DEMAND stream (and a bucket); returns the stream ARN."""
    if bucket:
        clients("s3").create_bucket(Bucket=bucket)
    kinesis = clients("kinesis")
    kinesis.create_stream(StreamName=stream, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    return kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]


def make_delivery_stream(clients, name: str, stream_arn: str, bucket: str, **overrides) -> None:
    args = {
        "delivery_stream_name": name,
        "stream_arn": stream_arn,
        "role_arn": ROLE_ARN,
        "bucket_arn": f"arn:aws:s3:::{bucket}",
        "prefix": "bronze/ingestion_date=!{timestamp:yyyy/MM/dd}/",
        "error_output_prefix": "errors/!{firehose:error-output-type}/ingestion_date=!{timestamp:yyyy/MM/dd}/",
        "buffer_size_mb": 1,
        "buffer_interval_seconds": 2,
        **overrides,
    }
    extra = args.pop("extra", {})
    request = build_delivery_stream_request(**args)
    request["ExtendedS3DestinationConfiguration"].update(extra)
    assert create_delivery_stream(clients("firehose"), request)["created"]


def put_lines(
    clients, stream: str, tag: str, count: int, start: int = 0, newline: bool = True
) -> list[bytes]:
    """Put ``count`` JSON records (batches of 500, random partition keys); returns their bytes in order."""
    records = [
        (json.dumps({"tag": tag, "n": n}) + ("\n" if newline else "")).encode()
        for n in range(start, start + count)
    ]
    kinesis = clients("kinesis")
    for i in range(0, len(records), 500):
        batch = [{"Data": data, "PartitionKey": uuid.uuid4().hex} for data in records[i : i + 500]]
        assert kinesis.put_records(StreamName=stream, Records=batch)["FailedRecordCount"] == 0
    return records


def read_objects(clients, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under ``prefix``: key -> body (gunzipped for .gz keys)."""
    s3 = clients("s3")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"]] = gzip.decompress(body) if obj["Key"].endswith(".gz") else body
    return out


def lines_of(objects: dict[str, bytes]) -> list[bytes]:
    return [line + b"\n" for body in objects.values() for line in body.splitlines()]


def wait_for_lines(clients, bucket: str, expected: int, timeout: float, prefix: str = "") -> dict[str, bytes]:
    """Poll S3 until ``expected`` lines are delivered, then once more to catch any extra (duplicate) object."""
    deadline = time.monotonic() + timeout
    objects = read_objects(clients, bucket, prefix)
    while len(lines_of(objects)) < expected and time.monotonic() < deadline:
        time.sleep(0.25)
        objects = read_objects(clients, bucket, prefix)
    time.sleep(0.5)
    return read_objects(clients, bucket, prefix)


def arrival_times(clients, stream: str) -> dict[bytes, object]:
    """Record bytes -> ApproximateArrivalTimestamp, read back from every shard."""
    kinesis = clients("kinesis")
    out = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        it = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )
        for rec in kinesis.get_records(ShardIterator=it["ShardIterator"], Limit=10000)["Records"]:
            out[rec["Data"]] = rec["ApproximateArrivalTimestamp"].astimezone(UTC)
    return out


# --- tests ----------------------------------------------------------------------------------------
def test_delivers_exactly_the_records_put_after_creation(aws_clients):
    bucket, stream, name = "fh-exact-bucket", "fh-exact-stream", "fh-exact"
    arn = make_source(aws_clients, stream, bucket)
    before = put_lines(aws_clients, stream, "before", 50)
    make_delivery_stream(aws_clients, name, arn, bucket, compression="GZIP")
    sent = put_lines(aws_clients, stream, "after", 2000)

    objects = wait_for_lines(aws_clients, bucket, 2000, timeout=2 + 5)

    delivered = lines_of(objects)
    assert sorted(delivered) == sorted(sent)  # all of them, once each, byte for byte
    assert not set(before) & set(delivered)
    arrivals = arrival_times(aws_clients, stream)
    for key, body in objects.items():
        oldest = min(arrivals[line + b"\n"] for line in body.splitlines())
        expected = rf"bronze/ingestion_date={oldest:%Y/%m/%d}/{name}-1-{oldest:%Y-%m-%d-%H-%M-%S}-{UUID}\.gz"
        assert re.fullmatch(expected, key), key


def test_delimiter_processor_and_default_time_prefix(aws_clients):
    bucket, stream, name = "fh-delim-bucket", "fh-delim-stream", "fh-delim"
    arn = make_source(aws_clients, stream, bucket)
    processing = {"Enabled": True, "Processors": [{"Type": "AppendDelimiterToRecord"}]}
    make_delivery_stream(aws_clients, name, arn, bucket, prefix="plain/", error_output_prefix=None,
                         buffer_interval_seconds=0, extra={"ProcessingConfiguration": processing})  # fmt: skip
    sent = put_lines(aws_clients, stream, "delim", 300, newline=False)

    objects = wait_for_lines(aws_clients, bucket, 300, timeout=5)

    assert sorted(lines_of(objects)) == sorted(r + b"\n" for r in sent)
    for key in objects:  # no timestamp expression: yyyy/MM/dd/HH/ appended; not compressed
        assert re.fullmatch(rf"plain/\d{{4}}/\d{{2}}/\d{{2}}/\d{{2}}/{name}-1-[\d-]{{19}}-{UUID}", key), key


def test_lambda_processor_records_go_to_the_error_prefix(aws_clients):
    bucket, stream, name = "fh-lambda-bucket", "fh-lambda-stream", "fh-lambda"
    lambda_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:transform"
    processing = {"Enabled": True, "Processors": [
        {"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": lambda_arn}]}]}  # fmt: skip
    arn = make_source(aws_clients, stream, bucket)
    make_delivery_stream(aws_clients, name, arn, bucket, buffer_interval_seconds=0,
                         extra={"ProcessingConfiguration": processing})  # fmt: skip
    sent = put_lines(aws_clients, stream, "lambda", 20)

    objects = wait_for_lines(aws_clients, bucket, 20, timeout=5)

    assert objects and all(k.startswith("errors/processing-failed/ingestion_date=") for k in objects)
    docs = [json.loads(line) for line in lines_of(objects)]
    assert sorted(base64.b64decode(d["rawData"]) for d in docs) == sorted(sent)
    assert {d["errorCode"] for d in docs} == {"Lambda.NotSupportedLocally"}
    assert {d["lambdaArn"] for d in docs} == {lambda_arn}
    assert set(docs[0]) == {"attemptsMade", "arrivalTimestamp", "errorCode", "errorMessage",
                            "attemptEndingTimestamp", "rawData", "lambdaArn"}  # fmt: skip


def test_missing_bucket_is_retried_and_nothing_is_lost(aws_clients):
    bucket, stream, name = "fh-late-bucket", "fh-late-stream", "fh-late"
    arn = make_source(aws_clients, stream, bucket=None)
    make_delivery_stream(aws_clients, name, arn, bucket, buffer_interval_seconds=0)
    sent = put_lines(aws_clients, stream, "late", 100)
    time.sleep(1.5)  # the service reads them and fails to write: NoSuchBucket
    aws_clients("s3").create_bucket(Bucket=bucket)

    objects = wait_for_lines(aws_clients, bucket, 100, timeout=6)

    assert sorted(lines_of(objects)) == sorted(sent)


def test_invalid_config_created_behind_validation_is_not_delivered(aws_clients):
    bucket, stream, name = "fh-broken-bucket", "fh-broken-stream", "fh-broken"
    arn = make_source(aws_clients, stream, bucket)
    request = build_delivery_stream_request(
        delivery_stream_name=name, stream_arn=arn, role_arn=ROLE_ARN, bucket_arn=f"arn:aws:s3:::{bucket}",
        prefix="bronze/!{timestamp:yyyy}/", error_output_prefix="errors/!{firehose:error-output-type/",
        buffer_size_mb=1, buffer_interval_seconds=0,
    )  # fmt: skip
    aws_clients("firehose").create_delivery_stream(**request)  # moto accepts what AWS rejects
    put_lines(aws_clients, stream, "broken", 10)
    time.sleep(1.5)
    assert read_objects(aws_clients, bucket) == {}


def test_deleted_delivery_stream_is_no_longer_read(aws_clients):
    bucket, stream, name = "fh-deleted-bucket", "fh-deleted-stream", "fh-deleted"
    arn = make_source(aws_clients, stream, bucket)
    make_delivery_stream(aws_clients, name, arn, bucket, buffer_interval_seconds=0)
    first = put_lines(aws_clients, stream, "first", 10)
    assert sorted(lines_of(wait_for_lines(aws_clients, bucket, 10, timeout=5))) == sorted(first)

    aws_clients("firehose").delete_delivery_stream(DeliveryStreamName=name)
    time.sleep(1.0)  # deleting is asynchronous (on AWS too): let the service see it at its next poll
    put_lines(aws_clients, stream, "second", 10)
    time.sleep(1.5)
    assert sorted(lines_of(read_objects(aws_clients, bucket))) == sorted(first)


def test_survives_a_reset_and_does_not_reuse_old_checkpoints(aws_clients, clean_stack):
    bucket, stream, name = "fh-reset-bucket", "fh-reset-stream", "fh-reset"
    arn = make_source(aws_clients, stream, bucket)
    make_delivery_stream(aws_clients, name, arn, bucket, buffer_interval_seconds=0)
    old = put_lines(aws_clients, stream, "old", 300)
    assert len(lines_of(wait_for_lines(aws_clients, bucket, 300, timeout=5))) == 300

    stack.reset(clean_stack.endpoint)  # everything disappears, the service keeps running
    arn = make_source(aws_clients, stream, bucket)  # same names again: sequence numbers restart
    before = put_lines(aws_clients, stream, "before-new", 5)
    make_delivery_stream(aws_clients, name, arn, bucket, buffer_interval_seconds=0)
    new = put_lines(aws_clients, stream, "new", 200)

    delivered = lines_of(wait_for_lines(aws_clients, bucket, 200, timeout=5))
    assert sorted(delivered) == sorted(new)
    assert not (set(old) | set(before)) & set(delivered)
    assert stack.pid_alive(clean_stack.firehose_pid)


def test_update_destination_changes_prefix_and_version_in_key(aws_clients):
    bucket, stream, name = "fh-update-bucket", "fh-update-stream", "fh-update"
    arn = make_source(aws_clients, stream, bucket)
    make_delivery_stream(aws_clients, name, arn, bucket, buffer_interval_seconds=0)
    first = put_lines(aws_clients, stream, "v1", 10)
    assert sorted(lines_of(wait_for_lines(aws_clients, bucket, 10, timeout=5, prefix="bronze/"))) == sorted(
        first
    )

    firehose = aws_clients("firehose")
    desc = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    firehose.update_destination(
        DeliveryStreamName=name,
        CurrentDeliveryStreamVersionId=desc["VersionId"],
        DestinationId=desc["Destinations"][0]["DestinationId"],
        ExtendedS3DestinationUpdate={"Prefix": "silver/!{timestamp:yyyy}/"},
    )
    second = put_lines(aws_clients, stream, "v2", 10)

    objects = wait_for_lines(aws_clients, bucket, 10, timeout=5, prefix="silver/")
    assert sorted(lines_of(objects)) == sorted(second)
    assert all(re.fullmatch(rf"silver/\d{{4}}/{name}-2-[\d-]{{19}}-{UUID}", key) for key in objects), list(
        objects
    )
