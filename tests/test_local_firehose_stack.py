"""The local Firehose service of the session stack, end to end: Kinesis records -> S3 objects."""

from __future__ import annotations

import base64
import gzip
import json
import re
import uuid
from datetime import UTC
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from helpers import read_shards
from waiting import DEADLINE, LogWatch, wait_until

from kinesis_lab.cloud.firehose_config import build_delivery_stream_request, create_delivery_stream
from kinesis_lab.local import stack
from kinesis_lab.local.firehose.checkpoints import stream_key

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


def checkpointed(state_dir) -> dict[str, dict[str, str]]:
    """The local Firehose service's checkpoints: delivery stream key -> shard -> last delivered sequence
    number (the file is replaced atomically: always whole)."""
    try:
        data = json.loads((Path(state_dir) / "firehose" / "checkpoints.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {key: value["shards"] for key, value in data["delivery_streams"].items()}


def delivery_key(clients, name: str) -> str:
    """How the service keys a delivery stream's checkpoints (ARN + CreateTimestamp)."""
    desc = clients("firehose").describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    return stream_key(desc["DeliveryStreamARN"], desc["CreateTimestamp"].astimezone(UTC))


def last_positions(clients, stream: str, records: list[bytes]) -> dict[str, int]:
    """Shard -> sequence number of the last of ``records`` in it, read back from the stream."""
    wanted, out = set(records), {}
    for shard_id, shard_records in read_shards(clients("kinesis"), stream).items():
        for rec in shard_records:
            if rec["Data"] in wanted:
                out[shard_id] = max(out.get(shard_id, 0), int(rec["SequenceNumber"]))
    return out


def wait_for_delivery(
    clients, state_dir, name: str, stream: str, records: list[bytes], bucket: str, prefix: str = "",
    timeout: float = DEADLINE,
) -> dict[str, bytes]:
    """Wait until delivery stream ``name`` has checkpointed every one of ``records``, then return every
    object under ``prefix``. The service checkpoints a record only once the object holding it is in S3
    and never reads it again, so what this returns is all that will ever be delivered for them:
    duplicates included, whatever the machine's load."""
    key, wanted = delivery_key(clients, name), last_positions(clients, stream, records)
    assert len(wanted) or not records, f"none of the {len(records)} records is in {stream}"

    def done() -> bool:
        have = checkpointed(state_dir).get(key, {})
        return all(int(have.get(shard, -1)) >= seq for shard, seq in wanted.items())

    wait_until(done, f"{name} to deliver (checkpoint) the {len(records)} records put into {stream}", timeout,
               detail=lambda: f"checkpoints {checkpointed(state_dir).get(key)}, last positions {wanted}; "
               f"see {Path(state_dir) / 'logs' / 'firehose.log'}")  # fmt: skip
    return read_objects(clients, bucket, prefix)


def wait_for_a_whole_poll(clients, state_dir, tag: str) -> None:
    """Return once the service has polled every delivery stream it reads, at least once entirely after
    this call began: two probe records on a delivery stream of their own (interval 0), the second put
    after the first was delivered, so it is read in a later poll than anything put before this call."""
    name = f"probe-{tag}"
    arn = make_source(clients, name, name)
    make_delivery_stream(clients, name, arn, name, buffer_interval_seconds=0)
    for n in range(2):
        probe = put_lines(clients, name, "probe", 1, start=n)
        wait_for_delivery(clients, state_dir, name, name, probe, name)


def arrival_times(clients, stream: str) -> dict[bytes, object]:
    """Record bytes -> ApproximateArrivalTimestamp, read back from every shard."""
    return {
        rec["Data"]: rec["ApproximateArrivalTimestamp"].astimezone(UTC)
        for shard_records in read_shards(clients("kinesis"), stream).values()
        for rec in shard_records
    }


# --- tests ---------------------------------------------------------------------------------------
@pytest.fixture
def firehose_log(local_stack_dir):
    """The session service's log, from now on."""
    return LogWatch(stack.log_dir(local_stack_dir) / "firehose.log")


def test_delivers_exactly_the_records_put_after_creation(aws_clients, local_stack_dir):
    bucket, stream, name = "fh-exact-bucket", "fh-exact-stream", "fh-exact"
    arn = make_source(aws_clients, stream, bucket)
    before = put_lines(aws_clients, stream, "before", 50)
    make_delivery_stream(aws_clients, name, arn, bucket, compression="GZIP")
    sent = put_lines(aws_clients, stream, "after", 2000)

    objects = wait_for_delivery(aws_clients, local_stack_dir, name, stream, sent, bucket)

    delivered = lines_of(objects)
    assert sorted(delivered) == sorted(sent)  # all of them, once each, byte for byte
    assert not set(before) & set(delivered)
    arrivals = arrival_times(aws_clients, stream)
    for key, body in objects.items():
        oldest = min(arrivals[line + b"\n"] for line in body.splitlines())
        expected = rf"bronze/ingestion_date={oldest:%Y/%m/%d}/{name}-1-{oldest:%Y-%m-%d-%H-%M-%S}-{UUID}\.gz"
        assert re.fullmatch(expected, key), key


def test_delimiter_processor_and_default_time_prefix(aws_clients, local_stack_dir):
    bucket, stream, name = "fh-delim-bucket", "fh-delim-stream", "fh-delim"
    arn = make_source(aws_clients, stream, bucket)
    processing = {"Enabled": True, "Processors": [{"Type": "AppendDelimiterToRecord"}]}
    make_delivery_stream(aws_clients, name, arn, bucket, prefix="plain/", error_output_prefix=None,
                         buffer_interval_seconds=0, extra={"ProcessingConfiguration": processing})  # fmt: skip
    sent = put_lines(aws_clients, stream, "delim", 300, newline=False)

    objects = wait_for_delivery(aws_clients, local_stack_dir, name, stream, sent, bucket)

    assert sorted(lines_of(objects)) == sorted(r + b"\n" for r in sent)
    for key in objects:  # no timestamp expression: yyyy/MM/dd/HH/ appended; not compressed
        assert re.fullmatch(rf"plain/\d{{4}}/\d{{2}}/\d{{2}}/\d{{2}}/{name}-1-[\d-]{{19}}-{UUID}", key), key


def test_lambda_processor_records_go_to_the_error_prefix(aws_clients, local_stack_dir):
    bucket, stream, name = "fh-lambda-bucket", "fh-lambda-stream", "fh-lambda"
    lambda_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:transform"
    processing = {"Enabled": True, "Processors": [
        {"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": lambda_arn}]}]}  # fmt: skip
    arn = make_source(aws_clients, stream, bucket)
    make_delivery_stream(aws_clients, name, arn, bucket, buffer_interval_seconds=0,
                         extra={"ProcessingConfiguration": processing})  # fmt: skip
    sent = put_lines(aws_clients, stream, "lambda", 20)

    objects = wait_for_delivery(aws_clients, local_stack_dir, name, stream, sent, bucket)

    assert objects and all(k.startswith("errors/processing-failed/ingestion_date=") for k in objects)
    docs = [json.loads(line) for line in lines_of(objects)]
    assert sorted(base64.b64decode(d["rawData"]) for d in docs) == sorted(sent)
    assert {d["errorCode"] for d in docs} == {"Lambda.NotSupportedLocally"}
    assert {d["lambdaArn"] for d in docs} == {lambda_arn}
    assert set(docs[0]) == {"attemptsMade", "arrivalTimestamp", "errorCode", "errorMessage",
                            "attemptEndingTimestamp", "rawData", "lambdaArn"}  # fmt: skip


def test_missing_bucket_is_retried_and_nothing_is_lost(aws_clients, local_stack_dir, firehose_log):
    bucket, stream, name = "fh-late-bucket", "fh-late-stream", "fh-late"
    arn = make_source(aws_clients, stream, bucket=None)
    make_delivery_stream(aws_clients, name, arn, bucket, buffer_interval_seconds=0)
    sent = put_lines(aws_clients, stream, "late", 100)
    # the service reads them and fails to write them: NoSuchBucket (then retries with a backoff)
    firehose_log.wait_for(f"delivery stream {name}: cannot write", "NoSuchBucket")
    aws_clients("s3").create_bucket(Bucket=bucket)

    objects = wait_for_delivery(aws_clients, local_stack_dir, name, stream, sent, bucket)

    assert sorted(lines_of(objects)) == sorted(sent)


def test_invalid_config_is_refused_at_create_as_on_aws(aws_clients):
    """moto accepts anything; the lab's moto server refuses what real Firehose refuses, with its error class."""
    bucket, stream, name = "fh-broken-bucket", "fh-broken-stream", "fh-broken"
    arn = make_source(aws_clients, stream, bucket)
    request = build_delivery_stream_request(
        delivery_stream_name=name, stream_arn=arn, role_arn=ROLE_ARN, bucket_arn=f"arn:aws:s3:::{bucket}",
        prefix="bronze/!{timestamp:yyyy}/", error_output_prefix="errors/!{firehose:error-output-type/",
        buffer_size_mb=1, buffer_interval_seconds=0,
    )  # fmt: skip
    firehose = aws_clients("firehose")
    with pytest.raises(ClientError) as refused:
        firehose.create_delivery_stream(**request)
    assert refused.value.response["Error"] == {
        "Code": "InvalidArgumentException",
        "Message": "ErrorOutputPrefix: '!{firehose:error-output-type/' at position 7 is never closed: "
                   "add the missing '}'",
    }
    assert name not in firehose.list_delivery_streams()["DeliveryStreamNames"]


@pytest.mark.parametrize(("change", "message"), [
    ({"Prefix": "bronze/!{timestamp:yyyy}/", "ErrorOutputPrefix": ""},
     "ErrorOutputPrefix is required when Prefix contains expressions: add one such as "
     "'errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/'"),
    ({"ErrorOutputPrefix": "errors/!{timestamp:yyyy}/"},
     "ErrorOutputPrefix has expressions but no !{firehose:error-output-type}: add it, e.g. "
     "'errors/!{firehose:error-output-type}/...'"),
    ({"BufferingHints": {"SizeInMBs": 129, "IntervalInSeconds": 901}},
     "BufferingHints.SizeInMBs is 129: it must be between 1 and 128; "
     "BufferingHints.IntervalInSeconds is 901: it must be between 0 and 900"),
])  # fmt: skip
def test_what_aws_refuses_is_refused_at_create_and_at_update(aws_clients, change, message):
    bucket = stream = name = f"fh-refused-{uuid.uuid4().hex[:8]}"
    arn = make_source(aws_clients, stream, bucket)
    request = build_delivery_stream_request(
        delivery_stream_name=name, stream_arn=arn, role_arn=ROLE_ARN, bucket_arn=f"arn:aws:s3:::{bucket}",
        prefix="bronze/", error_output_prefix=None, buffer_size_mb=1, buffer_interval_seconds=0,
    )  # fmt: skip
    firehose = aws_clients("firehose")
    broken = json.loads(json.dumps(request))
    broken["ExtendedS3DestinationConfiguration"].update(change)
    with pytest.raises(ClientError) as refused:
        firehose.create_delivery_stream(**broken)
    assert refused.value.response["Error"] == {"Code": "InvalidArgumentException", "Message": message}

    firehose.create_delivery_stream(**request)  # a valid one is created; an update that breaks it is refused
    desc = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    with pytest.raises(ClientError) as refused:
        firehose.update_destination(
            DeliveryStreamName=name, CurrentDeliveryStreamVersionId=desc["VersionId"],
            DestinationId=desc["Destinations"][0]["DestinationId"], ExtendedS3DestinationUpdate=change,
        )  # fmt: skip
    assert refused.value.response["Error"] == {"Code": "InvalidArgumentException", "Message": message}
    after = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert after["VersionId"] == desc["VersionId"]


def test_deleted_delivery_stream_is_no_longer_read(aws_clients, local_stack_dir, firehose_log):
    bucket, stream, name = "fh-deleted-bucket", "fh-deleted-stream", "fh-deleted"
    arn = make_source(aws_clients, stream, bucket)
    make_delivery_stream(aws_clients, name, arn, bucket, buffer_interval_seconds=0)
    first = put_lines(aws_clients, stream, "first", 10)
    assert sorted(lines_of(wait_for_delivery(aws_clients, local_stack_dir, name, stream, first, bucket))) == sorted(
        first
    )

    aws_clients("firehose").delete_delivery_stream(DeliveryStreamName=name)
    # deleting is asynchronous (on AWS too): the service stops reading once it has seen it gone
    firehose_log.wait_for(f"delivery stream {name} is gone (deleted or moto reset): stopped reading it")
    put_lines(aws_clients, stream, "second", 10)
    wait_for_a_whole_poll(aws_clients, local_stack_dir, "deleted")
    assert sorted(lines_of(read_objects(aws_clients, bucket))) == sorted(first)


def test_survives_a_reset_and_does_not_reuse_old_checkpoints(aws_clients, clean_stack, local_stack_dir):
    bucket, stream, name = "fh-reset-bucket", "fh-reset-stream", "fh-reset"
    arn = make_source(aws_clients, stream, bucket)
    make_delivery_stream(aws_clients, name, arn, bucket, buffer_interval_seconds=0)
    old = put_lines(aws_clients, stream, "old", 300)
    assert len(lines_of(wait_for_delivery(aws_clients, local_stack_dir, name, stream, old, bucket))) == 300

    stack.reset(clean_stack.endpoint)  # everything disappears, the service keeps running
    arn = make_source(aws_clients, stream, bucket)  # same names again: sequence numbers restart
    before = put_lines(aws_clients, stream, "before-new", 5)
    make_delivery_stream(aws_clients, name, arn, bucket, buffer_interval_seconds=0)
    new = put_lines(aws_clients, stream, "new", 200)

    delivered = lines_of(wait_for_delivery(aws_clients, local_stack_dir, name, stream, new, bucket))
    assert sorted(delivered) == sorted(new)
    assert not (set(old) | set(before)) & set(delivered)
    assert stack.pid_alive(clean_stack.firehose_pid)


def test_update_destination_changes_prefix_and_version_in_key(aws_clients, local_stack_dir, firehose_log):
    bucket, stream, name = "fh-update-bucket", "fh-update-stream", "fh-update"
    arn = make_source(aws_clients, stream, bucket)
    make_delivery_stream(aws_clients, name, arn, bucket, buffer_interval_seconds=0)
    first = put_lines(aws_clients, stream, "v1", 10)
    delivered = wait_for_delivery(aws_clients, local_stack_dir, name, stream, first, bucket, prefix="bronze/")
    assert sorted(lines_of(delivered)) == sorted(first)

    firehose = aws_clients("firehose")
    desc = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    firehose.update_destination(
        DeliveryStreamName=name,
        CurrentDeliveryStreamVersionId=desc["VersionId"],
        DestinationId=desc["Destinations"][0]["DestinationId"],
        ExtendedS3DestinationUpdate={"Prefix": "silver/!{timestamp:yyyy}/"},
    )
    # the update takes effect when the service sees it (asynchronous on AWS too): records put before
    # then may still go out under version 1
    firehose_log.wait_for(f"delivery stream {name} now at version 2")
    second = put_lines(aws_clients, stream, "v2", 10)

    objects = wait_for_delivery(aws_clients, local_stack_dir, name, stream, second, bucket, prefix="silver/")
    assert sorted(lines_of(objects)) == sorted(second)
    assert all(re.fullmatch(rf"silver/\d{{4}}/{name}-2-[\d-]{{19}}-{UUID}", key) for key in objects), list(
        objects
    )
    assert sorted(lines_of(read_objects(aws_clients, bucket, "bronze/"))) == sorted(first)  # nothing else there


def test_a_poll_says_whether_it_has_work(aws_clients, tmp_path):
    """What the service's idle backoff goes by: a poll has work while records are read, buffered or waiting to be
    written. A second reader with checkpoints of its own (the session's service delivers these records too)."""
    from kinesis_lab.local.firehose.service import Service

    bucket, stream, name = "fh-busy-bucket", "fh-busy-stream", "fh-busy"
    arn = make_source(aws_clients, stream, bucket)
    make_delivery_stream(aws_clients, name, arn, bucket, buffer_interval_seconds=0)
    service = Service(tmp_path)
    assert service.poll() is False  # the delivery stream found, its shards read: nothing in them
    put_lines(aws_clients, stream, "busy", 3)
    assert service.poll() is True  # read, and written (interval 0): it had work
    assert service.poll() is False  # nothing new since
    assert service.loops[name].buffer.records == [] and not service.loops[name].pending


def test_an_idle_service_polls_less_often_and_work_brings_the_interval_back():
    from kinesis_lab.local.firehose import service as fh

    assert [fh.next_poll_in(0.2, n) for n in range(9)] == [0.2] * 5 + [0.4, 0.8, 1.0, 1.0]
    assert fh.next_poll_in(2.0, 50) == 2.0  # never below the configured interval
    scripted = iter([False] * 8 + [True] + [False] * 2)
    waits: list[float] = []

    class Scripted(fh.Service):
        def __init__(self):  # no clients: poll is scripted
            self.warn = fh.RateLimitedLog()

        def poll(self) -> bool:
            return next(scripted)

    class Stop:
        def is_set(self) -> bool:
            return len(waits) == 11

        def wait(self, seconds: float) -> None:
            waits.append(round(seconds, 3))

    Scripted().run(Stop(), 0.2)
    assert waits == [0.2] * 4 + [0.4, 0.8, 1.0, 1.0] + [0.2] + [0.2] * 2
