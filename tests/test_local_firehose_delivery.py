"""Buffering, object bodies, error documents, settings from describe_delivery_stream, checkpoints."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime

import pytest
from helpers import FakeClock

from kinesis_lab.local.firehose.checkpoints import FILE_NAME, CheckpointStore, stream_key
from kinesis_lab.local.firehose.delivery import (
    MIB,
    Buffer,
    DeliverySettings,
    Failure,
    KinesisRecord,
    error_object_body,
    error_record,
    last_positions,
    object_body,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def rec(data: bytes, seq: str = "1", shard: str = "shardId-000000000000") -> KinesisRecord:
    return KinesisRecord(shard, seq, data, T0)


# --- buffering --------------------------------------------------------------------------------------
def test_size_hint_cuts_a_batch_as_soon_as_it_is_reached():
    buffer = Buffer(size_bytes=10, interval_seconds=60, clock=FakeClock())
    assert buffer.add(rec(b"12345", "1"), 5) is None
    assert buffer.add(rec(b"1234", "2"), 4) is None
    batch = buffer.add(rec(b"1", "3"), 1)  # 10 bytes: reached
    assert [r.sequence_number for r in batch] == ["1", "2", "3"]
    assert buffer.records == [] and buffer.bytes == 0 and not buffer.due()


def test_interval_counts_from_the_oldest_buffered_record():
    clock = FakeClock()
    buffer = Buffer(size_bytes=MIB, interval_seconds=2, clock=clock)
    assert not buffer.due()  # empty: never due
    buffer.add(rec(b"a", "1"), 1)
    clock.now += 1.5
    buffer.add(rec(b"b", "2"), 1)  # a newer record does not restart the interval
    assert not buffer.due()
    clock.now += 0.5
    assert buffer.due()
    assert [r.data for r in buffer.take()] == [b"a", b"b"]
    buffer.add(rec(b"c", "3"), 1)  # the next batch starts its own interval
    assert not buffer.due()


def test_interval_zero_is_due_at_every_poll_with_records():
    buffer = Buffer(size_bytes=MIB, interval_seconds=0, clock=FakeClock())
    assert not buffer.due()
    buffer.add(rec(b"a"), 1)
    assert buffer.due()


# --- object bodies --------------------------------------------------------------------------------
def test_records_are_concatenated_as_they_are():
    records = [rec(b'{"a":1}'), rec(b'{"b":2}\n'), rec(b"x")]
    assert object_body(records, append_delimiter=False, compression="UNCOMPRESSED") == b'{"a":1}{"b":2}\nx'


def test_append_delimiter_processor_adds_a_newline_to_each_record():
    records = [rec(b'{"a":1}'), rec(b'{"b":2}')]
    assert object_body(records, append_delimiter=True, compression="UNCOMPRESSED") == b'{"a":1}\n{"b":2}\n'


def test_gzip_body_gunzips_to_the_records():
    body = object_body([rec(b"one\n"), rec(b"two\n")], append_delimiter=False, compression="GZIP")
    assert body[:2] == b"\x1f\x8b"
    assert gzip.decompress(body) == b"one\ntwo\n"


def test_last_positions_per_shard():
    batch = [rec(b"", "5", "s0"), rec(b"", "7", "s1"), rec(b"", "9", "s0")]
    assert last_positions(batch) == {"s0": "9", "s1": "7"}


# --- error documents ------------------------------------------------------------------------------
def test_error_record_has_aws_fields():
    failure = Failure(
        "processing-failed", "Lambda.NotSupportedLocally", "cannot", lambda_arn="arn:aws:lambda:f"
    )
    ended = datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)
    assert error_record(rec(b"raw\xff"), failure, attempt_ended=ended) == {
        "attemptsMade": 0,
        "arrivalTimestamp": 1767323045678,
        "errorCode": "Lambda.NotSupportedLocally",
        "errorMessage": "cannot",
        "attemptEndingTimestamp": 1767323046000,
        "rawData": base64.b64encode(b"raw\xff").decode(),
        "lambdaArn": "arn:aws:lambda:f",
    }


def test_error_object_is_one_json_document_per_line():
    failure = Failure("processing-failed", "X", "y")
    body = error_object_body([rec(b"a"), rec(b"b")], failure, attempt_ended=T0)
    lines = body.decode().splitlines()
    assert [base64.b64decode(json.loads(line)["rawData"]) for line in lines] == [b"a", b"b"]
    assert "lambdaArn" not in json.loads(lines[0])


# --- settings from describe_delivery_stream -------------------------------------------------------
def description(**dest_overrides) -> dict:
    dest = {
        "RoleARN": "arn:aws:iam::123456789012:role/r",
        "BucketARN": "arn:aws:s3:::my-bucket",
        "Prefix": "bronze/",
        "ErrorOutputPrefix": "errors/!{firehose:error-output-type}/",
        "BufferingHints": {"SizeInMBs": 2, "IntervalInSeconds": 7},
        "CompressionFormat": "GZIP",
        **dest_overrides,
    }
    return {
        "DeliveryStreamName": "ds",
        "DeliveryStreamARN": "arn:aws:firehose:us-east-1:123456789012:deliverystream/ds",
        "DeliveryStreamType": "KinesisStreamAsSource",
        "VersionId": "3",
        "CreateTimestamp": T0,
        "Source": {
            "KinesisStreamSourceDescription": {"KinesisStreamARN": "arn:aws:kinesis:us-east-1:1:stream/st"}
        },
        "Destinations": [{"ExtendedS3DestinationDescription": dest}],
    }


def test_settings_from_description():
    s = DeliverySettings.from_description(description())
    assert (s.name, s.version, s.bucket, s.stream_name) == ("ds", "3", "my-bucket", "st")
    assert (s.size_bytes, s.interval_seconds, s.compression) == (2 * MIB, 7, "GZIP")
    assert (s.append_delimiter, s.failure) == (False, None)


def test_aws_buffering_defaults_when_no_hints():
    desc = description()
    del desc["Destinations"][0]["ExtendedS3DestinationDescription"]["BufferingHints"]
    s = DeliverySettings.from_description(desc)
    assert (s.size_bytes, s.interval_seconds) == (5 * MIB, 300)


def test_direct_put_is_not_ours():
    assert DeliverySettings.from_description({**description(), "DeliveryStreamType": "DirectPut"}) is None


@pytest.mark.parametrize(
    ("dest", "append", "failure"),
    [
        ({"ProcessingConfiguration": {"Enabled": True, "Processors": [{"Type": "AppendDelimiterToRecord"}]}},
         True, None),
        ({"ProcessingConfiguration": {"Enabled": False, "Processors": [{"Type": "AppendDelimiterToRecord"}]}},
         False, None),
        ({"ProcessingConfiguration": {"Enabled": True, "Processors": [
            {"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": "arn:l"}]}]}},
         False, ("processing-failed", "Lambda.NotSupportedLocally", "arn:l")),
        ({"ProcessingConfiguration": {"Enabled": True, "Processors": [{"Type": "RecordDeAggregation"}]}},
         False, ("processing-failed", "Processor.NotSupportedLocally", None)),
        ({"DataFormatConversionConfiguration": {"Enabled": True}},
         False, ("format-conversion-failed", "DataFormatConversion.NotSupportedLocally", None)),
        ({"DynamicPartitioningConfiguration": {"Enabled": True}},
         False, ("processing-failed", "DynamicPartitioning.NotSupportedLocally", None)),
        ({"CompressionFormat": "Snappy"}, False, ("processing-failed", "Compression.NotSupportedLocally", None)),
    ],
)  # fmt: skip
def test_processors_and_unsupported_features(dest, append, failure):
    s = DeliverySettings.from_description(description(**dest))
    assert s.append_delimiter is append
    got = (s.failure.output_type, s.failure.code, s.failure.lambda_arn) if s.failure else None
    assert got == failure


# --- checkpoints ----------------------------------------------------------------------------------
def test_checkpoints_persist_across_instances(tmp_path):
    key = stream_key("arn:ds", T0)
    store = CheckpointStore(tmp_path)
    assert store.get(key, "s0") is None
    store.advance(key, {"s0": "5", "s1": "2"})
    store.advance(key, {"s0": "9"})
    again = CheckpointStore(tmp_path)
    assert again.shards(key) == {"s0": "9", "s1": "2"}
    assert not (tmp_path / (FILE_NAME + ".tmp")).exists()  # replaced atomically, nothing left over
    assert json.loads((tmp_path / FILE_NAME).read_text())["delivery_streams"][key]["shards"]["s0"] == "9"


def test_checkpoints_are_keyed_by_arn_and_creation_time(tmp_path):
    store = CheckpointStore(tmp_path)
    old = stream_key("arn:ds", T0)
    recreated = stream_key("arn:ds", T0.replace(second=59))  # same name and ARN, created again
    store.advance(old, {"s0": "5"})
    assert old != recreated and store.get(recreated, "s0") is None
    store.forget(old)
    assert CheckpointStore(tmp_path).keys() == []


def test_corrupt_checkpoint_file_says_what_to_do(tmp_path):
    (tmp_path / FILE_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="delete it to start over"):
        CheckpointStore(tmp_path)
