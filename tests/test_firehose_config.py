"""The lab's create helper: request shape, validation messages, create/retry/wait against moto."""

from __future__ import annotations

import json

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from kinesis_lab.cloud.config import load_config
from kinesis_lab.cloud.firehose_config import (
    ROLE_NOT_READY,
    ROLE_PROPAGATION_TIMEOUT,
    DeliveryConfigError,
    DeliveryStreamNotActive,
    Finding,
    RoleNotAssumable,
    build_delivery_stream_request,
    check_delivery_config,
    create_delivery_stream,
    delivery_config_warnings,
    require_active,
    validate_delivery_config,
    wait_until_active,
)

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/jm-demo-kinesis-lab"
ROLE_ARN = "arn:aws:iam::123456789012:role/FirehoseToS3Role"
BUCKET_ARN = "arn:aws:s3:::jm-demo-s3-lab-123456789012-us-east-1"


def request(**overrides) -> dict:
    args = {
        "delivery_stream_name": "salud-firehose-tos3",
        "stream_arn": STREAM_ARN,
        "role_arn": ROLE_ARN,
        "bucket_arn": BUCKET_ARN,
        "prefix": "bronze/ingestion_date=!{timestamp:yyyy/MM/dd}/",
        "error_output_prefix": "errors/!{firehose:error-output-type}/ingestion_date=!{timestamp:yyyy/MM/dd}/",
        "buffer_size_mb": 1,
        "buffer_interval_seconds": 60,
        **overrides,
    }
    return build_delivery_stream_request(**args)


def with_destination(**changes) -> dict:
    req = request()
    req["ExtendedS3DestinationConfiguration"].update(changes)
    return req


def test_request_shape():
    req = request(
        compression="GZIP", log_group="/aws/kinesisfirehose/salud-firehose-tos3", tags={"project": "lab"}
    )
    assert req == {
        "DeliveryStreamName": "salud-firehose-tos3",
        "DeliveryStreamType": "KinesisStreamAsSource",
        "KinesisStreamSourceConfiguration": {"KinesisStreamARN": STREAM_ARN, "RoleARN": ROLE_ARN},
        "ExtendedS3DestinationConfiguration": {
            "RoleARN": ROLE_ARN,
            "BucketARN": BUCKET_ARN,
            "Prefix": "bronze/ingestion_date=!{timestamp:yyyy/MM/dd}/",
            "ErrorOutputPrefix": "errors/!{firehose:error-output-type}/ingestion_date=!{timestamp:yyyy/MM/dd}/",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60},
            "CompressionFormat": "GZIP",
            "CloudWatchLoggingOptions": {
                "Enabled": True,
                "LogGroupName": "/aws/kinesisfirehose/salud-firehose-tos3",
                "LogStreamName": "DestinationDelivery",
            },
        },
        "Tags": [{"Key": "project", "Value": "lab"}],
    }


def test_request_without_optional_parts():
    req = request(error_output_prefix=None, prefix="bronze/")
    dest = req["ExtendedS3DestinationConfiguration"]
    assert "ErrorOutputPrefix" not in dest and "CloudWatchLoggingOptions" not in dest and "Tags" not in req
    assert dest["CompressionFormat"] == "UNCOMPRESSED"


def test_lab_defaults_are_valid():
    cfg = load_config()
    req = request(prefix=cfg.s3_prefix, error_output_prefix=cfg.error_prefix, buffer_size_mb=cfg.buffer_size_mb,
                  buffer_interval_seconds=cfg.buffer_interval_seconds)  # fmt: skip
    assert validate_delivery_config(req) == []


def test_lab_defaults_give_no_warning():
    cfg = load_config()
    assert delivery_config_warnings(request(prefix=cfg.s3_prefix, error_output_prefix=cfg.error_prefix)) == []


ORIGINAL_COURSE = {"prefix": "bronze/ingestion_date=!{timestamp:yyyy/MM/dd}",  # no trailing "/"
                   "error_output_prefix": "errors/!{firehose:error-output-type/"}  # a "}" is missing


def test_original_course_has_one_problem_and_one_warning():
    req = request(**ORIGINAL_COURSE)
    # what AWS rejects: only the missing brace
    assert validate_delivery_config(req) == [
        "ErrorOutputPrefix: '!{firehose:error-output-type/' at position 7 is never closed: add the missing '}'"
    ]
    # what AWS accepts but this lab's validator warns about: the object name glued to the date
    assert delivery_config_warnings(req) == [
        "Prefix 'bronze/ingestion_date=!{timestamp:yyyy/MM/dd}' does not end with '/': Firehose appends each "
        "object name right after it, glued to the date: "
        "'bronze/ingestion_date=2026/11/26salud-firehose-tos3-1-2026-11-26-10-15-02-...'; end it with '/'"
    ]
    findings = check_delivery_config(req)
    assert [f.severity for f in findings] == ["problem", "warning"]
    assert findings[0] == Finding("problem", validate_delivery_config(req)[0])
    assert [str(f).split(": ", 1)[0] for f in findings] == [
        "problem (AWS rejects it)", "warning (this lab's validator; AWS accepts it)"]
    assert str(findings[1]).endswith(delivery_config_warnings(req)[0])


def test_the_warning_matches_the_key_firehose_writes():
    from kinesis_lab.cloud import prefixes as expressions
    from kinesis_lab.cloud.firehose_config import EXAMPLE_TIME

    key = expressions.object_key(ORIGINAL_COURSE["prefix"], stream_name="salud-firehose-tos3", version=1,
                                 when=EXAMPLE_TIME)
    assert key.startswith("bronze/ingestion_date=2026/11/26salud-firehose-tos3-1-2026-11-26-10-15-02-")
    assert key.removesuffix(key.split("-10-15-02-")[1]) + "..." in delivery_config_warnings(
        request(**ORIGINAL_COURSE))[0]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"Prefix": "bronze"},
         ["Prefix 'bronze' does not end with '/': Firehose appends its default date folders (yyyy/MM/dd/HH/) "
          "right after it: 'bronze2026/11/26/10/salud-firehose-tos3-1-2026-11-26-10-15-02-...'; end it with '/'"]),
        ({"Prefix": "b/!{firehose:random-string}"},  # random: no example
         ["Prefix 'b/!{firehose:random-string}' does not end with '/': Firehose appends its default date "
          "folders (yyyy/MM/dd/HH/) right after it; end it with '/'"]),
        ({"ErrorOutputPrefix": "errors/!{firehose:error-output-type}"},
         ["ErrorOutputPrefix 'errors/!{firehose:error-output-type}' does not end with '/': Firehose appends "
          "each object name right after it, glued to the value of !{firehose:error-output-type}: "
          "'errors/processing-failedsalud-firehose-tos3-1-2026-11-26-10-15-02-...'; end it with '/'"]),
        ({"Prefix": "bronze/", "ErrorOutputPrefix": "errors"},
         ["ErrorOutputPrefix 'errors' does not end with '/': Firehose appends each object name right after "
          "it, glued to 'errors': 'errorssalud-firehose-tos3-1-2026-11-26-10-15-02-...'; end it with '/'"]),
        ({"Prefix": "", "ErrorOutputPrefix": None}, []),  # Firehose's default yyyy/MM/dd/HH/ folders
    ],
)  # fmt: skip
def test_warning_messages(changes, expected):
    req = with_destination(**changes)
    assert delivery_config_warnings(req) == expected
    assert [f.message for f in check_delivery_config(req) if f.severity == "warning"] == expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"ErrorOutputPrefix": None},
         ["ErrorOutputPrefix is required when Prefix contains expressions: add one such as "
          "'errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/'"]),
        ({"ErrorOutputPrefix": "errors/!{timestamp:yyyy}/"},
         ["ErrorOutputPrefix has expressions but no !{firehose:error-output-type}: add it, e.g. "
          "'errors/!{firehose:error-output-type}/...'"]),
        ({"Prefix": "bronze/!{firehose:error-output-type}/"},
         ["Prefix: !{firehose:error-output-type} is only allowed in ErrorOutputPrefix: remove it from Prefix"]),
        ({"Prefix": "bronze/!{partitionKeyFromLambda:id}/"},
         ["Prefix: !{partitionKeyFromLambda:id} needs dynamic partitioning, which the local Firehose service does "
          "not support: use !{timestamp:...} or !{firehose:random-string} instead"]),
        ({"Prefix": "/bronze/"}, ["Prefix '/bronze/' starts with '/': remove the leading slash (S3 keys have no root '/')"]),
        ({"Prefix": "p" * 1025}, ["Prefix is 1025 characters long: the limit is 1024"]),
        ({"BufferingHints": {"SizeInMBs": 0, "IntervalInSeconds": 901}},
         ["BufferingHints.SizeInMBs is 0: it must be between 1 and 128",
          "BufferingHints.IntervalInSeconds is 901: it must be between 0 and 900"]),
        ({"BufferingHints": {"SizeInMBs": 129, "IntervalInSeconds": 0}},
         ["BufferingHints.SizeInMBs is 129: it must be between 1 and 128"]),
        ({"BufferingHints": {"SizeInMBs": 5}},
         ["BufferingHints needs both SizeInMBs and IntervalInSeconds (or neither)"]),
        ({"BucketARN": "jm-demo-s3-lab"},
         ["BucketARN 'jm-demo-s3-lab' is not an S3 bucket ARN: use 'arn:aws:s3:::<bucket-name>'"]),
        ({"Prefix": "bronze/", "ErrorOutputPrefix": None}, []),  # no expressions: no error prefix needed
        ({"Prefix": "", "ErrorOutputPrefix": "errors/"}, []),
    ],
)  # fmt: skip
def test_validation_messages(changes, expected):
    assert validate_delivery_config(with_destination(**changes)) == expected


def test_validation_reports_every_problem_at_once():
    req = with_destination(Prefix="/a/!{timestamp:yyyy", ErrorOutputPrefix=None, BufferingHints={"SizeInMBs": 200,
                           "IntervalInSeconds": 60})  # fmt: skip
    assert len(validate_delivery_config(req)) == 4


# --- against moto -------------------------------------------------------------------------------------
def test_create_rejects_invalid_config_before_calling_aws(aws_clients):
    firehose = aws_clients("firehose")
    with pytest.raises(DeliveryConfigError) as err:
        create_delivery_stream(firehose, with_destination(ErrorOutputPrefix=None))
    assert err.value.problems[0].startswith("ErrorOutputPrefix is required")
    assert firehose.list_delivery_streams()["DeliveryStreamNames"] == []


def test_create_goes_on_with_a_warning_and_returns_it(aws_clients):
    firehose = aws_clients("firehose")
    req = request(prefix=ORIGINAL_COURSE["prefix"])
    outcome = create_delivery_stream(firehose, req)
    assert outcome["created"] is True and outcome["warnings"] == delivery_config_warnings(req) != []


def test_create_then_already_exists_then_active(aws_clients):
    firehose = aws_clients("firehose")
    first = create_delivery_stream(firehose, request())
    assert first["created"] is True and first["arn"].endswith(":deliverystream/salud-firehose-tos3")
    second = create_delivery_stream(firehose, request(buffer_interval_seconds=5))
    assert second == {
        "created": False,
        "arn": first["arn"],
        "message": "delivery stream salud-firehose-tos3 already exists: kept as it is "
        "(delete it first to change its configuration)",
        "warnings": [],
    }
    assert wait_until_active(firehose, "salud-firehose-tos3", timeout=60, poll=0.1) == "ACTIVE"


def _answer_role_not_ready(times: list[int]):
    """A botocore hook answering CreateDeliveryStream like AWS does while a new role propagates."""

    def handler(**_):
        if times[0] <= 0:
            return None  # let the real request reach moto
        times[0] -= 1
        body = json.dumps(
            {
                "__type": "InvalidArgumentException",
                "message": f"Firehose is unable to assume role {ROLE_ARN}. Please check the role provided.",
            }
        )
        return AWSResponse(
            "http://local", 400, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body.encode())
        )

    return handler


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body

    def read(self, *_):
        return self.body


def test_create_retries_while_the_role_propagates(aws_clients):
    firehose = aws_clients("firehose")
    failures_left = [2]
    firehose.meta.events.register(
        "before-send.firehose.CreateDeliveryStream", _answer_role_not_ready(failures_left)
    )
    slept: list[float] = []
    outcome = create_delivery_stream(firehose, request(), role_propagation_timeout=60, sleep=slept.append)
    assert outcome["created"] is True and failures_left == [0]
    assert slept == [1.0, 2.0]  # backoff between the refused attempts


def test_create_gives_up_after_the_timeout(aws_clients):
    firehose = aws_clients("firehose")
    firehose.meta.events.register("before-send.firehose.CreateDeliveryStream", _answer_role_not_ready([99]))
    with pytest.raises(RoleNotAssumable, match="trust policy allows firehose.amazonaws.com"):
        create_delivery_stream(firehose, request(), role_propagation_timeout=0.5, sleep=lambda _: None)
    assert firehose.list_delivery_streams()["DeliveryStreamNames"] == []


def test_wait_until_active_times_out_clearly(aws_clients):
    firehose = aws_clients("firehose")
    with pytest.raises(TimeoutError, match="delivery stream missing is still not found after 0.2 s"):
        wait_until_active(firehose, "missing", timeout=0.2, poll=0.1)


@pytest.mark.stack
def test_create_does_not_retry_other_invalid_arguments(aws_clients):
    """Only "cannot use the role yet" is worth waiting for: any other refusal (even one naming a role) is raised
    at once, with nothing slept."""
    firehose = aws_clients("firehose")
    body = {"__type": "InvalidArgumentException", "message": f"Role {ROLE_ARN} has no trust policy for this region"}

    def answer(**_):
        return AWSResponse("http://local", 400, {"Content-Type": "application/x-amz-json-1.1"},
                           _Raw(json.dumps(body).encode()))

    firehose.meta.events.register("before-send.firehose.CreateDeliveryStream", answer)
    slept: list[float] = []
    with pytest.raises(ClientError) as err:
        create_delivery_stream(firehose, request(), sleep=slept.append)
    assert err.value.response["Error"]["Message"] == body["message"] and slept == []


@pytest.mark.parametrize("message", [
    "Firehose is unable to assume role arn:aws:iam::123456789012:role/FirehoseToS3Role. Please check the role provided.",
    "Role arn:aws:iam::123456789012:role/FirehoseToS3Role is not authorized to perform: kinesis:DescribeStream on "
    "resource arn:aws:kinesis:us-east-1:123456789012:stream/jm-demo-kinesis-lab.",
    "The security token included in the request is invalid. Ensure that the provided IAM role associated with "
    "firehose is not deleted.",
])
def test_the_role_not_ready_messages_are_the_ones_retried(message):
    assert ROLE_NOT_READY.search(message)
    assert ROLE_PROPAGATION_TIMEOUT == 120


@pytest.mark.stack
def test_producing_is_refused_until_the_delivery_stream_is_active(aws_clients):
    firehose = aws_clients("firehose")
    with pytest.raises(DeliveryStreamNotActive) as err:
        require_active(firehose, "salud-firehose-tos3")
    assert str(err.value) == (
        "delivery stream salud-firehose-tos3 does not exist: Firehose reads the Kinesis stream from the moment it is "
        "ACTIVE: records sent now would never reach S3. Run notebook 03 first, then this cell again")
    create_delivery_stream(firehose, request())

    def creating(parsed, **_):
        parsed["DeliveryStreamDescription"]["DeliveryStreamStatus"] = "CREATING"

    firehose.meta.events.register("after-call.firehose.DescribeDeliveryStream", creating)
    with pytest.raises(DeliveryStreamNotActive) as err:
        require_active(firehose, "salud-firehose-tos3")
    assert str(err.value) == (
        "delivery stream salud-firehose-tos3 is CREATING, not ACTIVE: Firehose reads the Kinesis stream from the "
        "moment it is ACTIVE: records sent now would never reach S3. Wait for it (notebook 03 waits), then run this "
        "cell again")
    firehose.meta.events.unregister("after-call.firehose.DescribeDeliveryStream", creating)
    assert require_active(firehose, "salud-firehose-tos3") == "ACTIVE"
