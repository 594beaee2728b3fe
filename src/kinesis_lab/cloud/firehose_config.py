"""Creating the lab's Firehose delivery stream (Kinesis stream -> S3), the same way on AWS and locally.

moto accepts any configuration; real Firehose rejects some at create time. ``validate_delivery_config``
reports those problems up front (one line each, saying the fix), so a configuration that works
locally also works on AWS. Rules: docs.aws.amazon.com/firehose/latest/dev/s3-prefixes.html
("Semantic rules") and the API reference (BufferingHints, Prefix length).

``delivery_config_warnings`` reports what AWS accepts but this lab advises against (a prefix not ending
in ``/`` glues each object name to the date). ``check_delivery_config`` returns both, problems first,
as ``Finding``s that say which kind they are.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from botocore.exceptions import ClientError

from kinesis_lab.cloud import prefixes as expressions
from kinesis_lab.cloud.aws import error_code, error_message

MAX_PREFIX_LENGTH = 1024
SIZE_RANGE = (1, 128)  # BufferingHints.SizeInMBs
INTERVAL_RANGE = (0, 900)  # BufferingHints.IntervalInSeconds
# what Firehose answers (InvalidArgumentException) while a just-created role or its policy propagates in IAM
ROLE_NOT_READY = re.compile(
    r"Firehose is unable to assume role|is not authorized to perform: kinesis:"
    r"|security token included in the request is invalid"
)
ROLE_PROPAGATION_TIMEOUT = 120  # seconds
LOG_RETENTION_DAYS = 14  # the delivery-error log group's retention: CloudWatch keeps (and bills) events forever by default
BUCKET_ARN = re.compile(r"^arn:[\w-]+:s3:::[a-z0-9][a-z0-9.\-]{1,254}$")


class DeliveryConfigError(ValueError):
    """A delivery stream configuration real Firehose would reject. ``problems`` has one line per issue."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid delivery stream configuration:\n- " + "\n- ".join(self.problems))


@dataclass(frozen=True)
class Finding:
    """One result of ``check_delivery_config``. ``severity`` is "problem" (real Firehose rejects the
    configuration) or "warning" (AWS accepts it; this lab's validator advises against it)."""

    severity: str
    message: str

    def __str__(self) -> str:
        label = ("problem (AWS rejects it)" if self.severity == "problem"
                 else "warning (this lab's validator; AWS accepts it)")
        return f"{label}: {self.message}"


class RoleNotAssumable(RuntimeError):
    """Firehose kept refusing the role (still propagating after the timeout, or a wrong trust policy)."""


class DeliveryStreamNotActive(RuntimeError):
    """The delivery stream is missing or not ACTIVE yet: records produced now would never be delivered."""


def build_delivery_stream_request(
    *,
    delivery_stream_name: str,
    stream_arn: str,
    role_arn: str,
    bucket_arn: str,
    prefix: str,
    error_output_prefix: str | None,
    buffer_size_mb: int,
    buffer_interval_seconds: int,
    compression: str = "UNCOMPRESSED",
    log_group: str | None = None,
    tags: dict[str, str] | None = None,
) -> dict:
    """The keyword arguments of ``firehose.create_delivery_stream`` for a Kinesis-sourced S3 delivery."""
    destination: dict = {
        "RoleARN": role_arn,
        "BucketARN": bucket_arn,
        "Prefix": prefix,
        "BufferingHints": {"SizeInMBs": buffer_size_mb, "IntervalInSeconds": buffer_interval_seconds},
        "CompressionFormat": compression,
    }
    if error_output_prefix:
        destination["ErrorOutputPrefix"] = error_output_prefix
    if log_group:
        destination["CloudWatchLoggingOptions"] = {
            "Enabled": True,
            "LogGroupName": log_group,
            "LogStreamName": "DestinationDelivery",
        }
    request = {
        "DeliveryStreamName": delivery_stream_name,
        "DeliveryStreamType": "KinesisStreamAsSource",
        "KinesisStreamSourceConfiguration": {"KinesisStreamARN": stream_arn, "RoleARN": role_arn},
        "ExtendedS3DestinationConfiguration": destination,
    }
    if tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    return request


def _destination(kwargs: dict) -> dict:
    return kwargs.get("ExtendedS3DestinationConfiguration") or kwargs.get("S3DestinationConfiguration") or {}


def validate_delivery_config(kwargs: dict) -> list[str]:
    """Problems real Firehose would reject at create time (moto accepts them all). Empty list = fine."""
    dest = _destination(kwargs)
    prefix = dest.get("Prefix") or ""
    error_prefix = dest.get("ErrorOutputPrefix") or ""
    found: list[str] = []

    for field, value in (("Prefix", prefix), ("ErrorOutputPrefix", error_prefix)):
        if value.startswith("/"):
            found.append(
                f"{field} {value!r} starts with '/': remove the leading slash (S3 keys have no root '/')"
            )
        if len(value) > MAX_PREFIX_LENGTH:
            found.append(f"{field} is {len(value)} characters long: the limit is {MAX_PREFIX_LENGTH}")
        found += expressions.problems(field, value, error_prefix=field == "ErrorOutputPrefix")

    if expressions.has_expressions(prefix) and not error_prefix:
        found.append(
            "ErrorOutputPrefix is required when Prefix contains expressions: add one such as "
            "'errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/'"
        )
    # "!{firehose:error-output-type" without its "}" is reported as unclosed above, not as missing
    if expressions.has_expressions(error_prefix) and expressions.ERROR_OUTPUT_TYPE[:-1] not in error_prefix:
        found.append(
            "ErrorOutputPrefix has expressions but no !{firehose:error-output-type}: add it, e.g. "
            "'errors/!{firehose:error-output-type}/...'"
        )

    hints = dest.get("BufferingHints")
    if hints is not None:
        found += _buffering_problems(hints)

    bucket_arn = dest.get("BucketARN")
    if bucket_arn is not None and not BUCKET_ARN.match(bucket_arn):
        found.append(f"BucketARN {bucket_arn!r} is not an S3 bucket ARN: use 'arn:aws:s3:::<bucket-name>'")
    return found


# a fixed moment for the example keys in warnings
EXAMPLE_TIME = datetime(2026, 11, 26, 10, 15, 2, tzinfo=UTC)


def _example_key(template: str, stream_name: str, error_prefix: bool) -> str | None:
    """The start of an object key ``template`` gives at EXAMPLE_TIME; None if it cannot be evaluated
    (reported as a problem) or is random."""
    if any(e.namespace == "firehose" and e.value == "random-string" for e in expressions.expressions(template)):
        return None
    try:
        evaluated = expressions.evaluate(template, EXAMPLE_TIME,
                                         error_output_type="processing-failed" if error_prefix else None)
    except expressions.ExpressionError:
        return None
    return f"{evaluated}{stream_name}-1-{EXAMPLE_TIME:%Y-%m-%d-%H-%M-%S}-..."


def _last_part(template: str) -> str:
    """What ends a prefix, in words: "the date", "the value of !{...}" or its last characters."""
    last = expressions.split_template(template)[0][-1]
    if not isinstance(last, expressions.Expression):
        return repr(template[-12:])
    if last.namespace == "timestamp":
        return "the date"
    return f"the value of !{{{last.namespace}:{last.value}}}"


def delivery_config_warnings(kwargs: dict) -> list[str]:
    """What this lab's validator warns about although AWS accepts it: a Prefix or ErrorOutputPrefix that
    does not end in '/'. Firehose writes the object name (or, for a Prefix without a timestamp, its
    default ``yyyy/MM/dd/HH/`` folders) right after the prefix, glued to its last characters."""
    dest = _destination(kwargs)
    stream_name = kwargs.get("DeliveryStreamName") or "<delivery-stream>"
    found: list[str] = []
    for field in ("Prefix", "ErrorOutputPrefix"):
        value = dest.get(field) or ""
        if not value or value.endswith("/"):
            continue
        if field == "Prefix" and not expressions.has_timestamp(value):
            what = "Firehose appends its default date folders (yyyy/MM/dd/HH/) right after it"
            example = _example_key(expressions.effective_prefix(value), stream_name, False)
        else:
            what = f"Firehose appends each object name right after it, glued to {_last_part(value)}"
            example = _example_key(value, stream_name, field == "ErrorOutputPrefix")
        shown = f": {example!r}" if example else ""
        found.append(f"{field} {value!r} does not end with '/': {what}{shown}; end it with '/'")
    return found


def check_delivery_config(kwargs: dict) -> list[Finding]:
    """Everything ``validate_delivery_config`` (problems) and ``delivery_config_warnings`` (warnings) find,
    problems first. ``print(finding)`` says which kind each is."""
    return [Finding("problem", m) for m in validate_delivery_config(kwargs)] + [
        Finding("warning", m) for m in delivery_config_warnings(kwargs)
    ]


def _buffering_problems(hints: dict) -> list[str]:
    found = []
    size, interval = hints.get("SizeInMBs"), hints.get("IntervalInSeconds")
    if (size is None) != (interval is None):
        found.append("BufferingHints needs both SizeInMBs and IntervalInSeconds (or neither)")
    if size is not None and not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        found.append(
            f"BufferingHints.SizeInMBs is {size}: it must be between {SIZE_RANGE[0]} and {SIZE_RANGE[1]}"
        )
    if interval is not None and not INTERVAL_RANGE[0] <= interval <= INTERVAL_RANGE[1]:
        found.append(
            f"BufferingHints.IntervalInSeconds is {interval}: "
            f"it must be between {INTERVAL_RANGE[0]} and {INTERVAL_RANGE[1]}"
        )
    return found


def create_delivery_stream(
    firehose_client,
    kwargs: dict,
    *,
    role_propagation_timeout: float = ROLE_PROPAGATION_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Validate, then create. Returns ``{"created": bool, "arn": str, "message": str, "warnings": [str]}``.

    Problems (``validate_delivery_config``) raise ``DeliveryConfigError`` before any call; warnings
    (``delivery_config_warnings``) do not stop it and are returned. An existing delivery stream of that
    name is kept (created False). On AWS a role created seconds ago may not be usable yet: Firehose answers
    InvalidArgumentException with one of the ``ROLE_NOT_READY`` messages, retried with backoff for up to
    ``role_propagation_timeout`` seconds; any other error is raised at once."""
    problems = validate_delivery_config(kwargs)
    if problems:
        raise DeliveryConfigError(problems)
    warnings = delivery_config_warnings(kwargs)
    name = kwargs["DeliveryStreamName"]
    deadline = time.monotonic() + role_propagation_timeout
    delay = 1.0
    while True:
        try:
            arn = firehose_client.create_delivery_stream(**kwargs)["DeliveryStreamARN"]
            return {"created": True, "arn": arn, "message": f"created delivery stream {name}",
                    "warnings": warnings}
        except ClientError as exc:
            code = error_code(exc)
            if code == "ResourceInUseException":
                desc = firehose_client.describe_delivery_stream(DeliveryStreamName=name)
                return {
                    "created": False,
                    "arn": desc["DeliveryStreamDescription"]["DeliveryStreamARN"],
                    "message": f"delivery stream {name} already exists: kept as it is "
                    "(delete it first to change its configuration)",
                    "warnings": warnings,
                }
            message = error_message(exc)
            if code != "InvalidArgumentException" or not ROLE_NOT_READY.search(message):
                raise
            if time.monotonic() + delay > deadline:
                raise RoleNotAssumable(
                    f"Firehose still cannot use the role after {role_propagation_timeout:g} s ({message}): "
                    "check the role's trust policy allows firehose.amazonaws.com, then run this again"
                ) from exc
            sleep(delay)
            delay = min(delay * 2, 10.0)


def wait_until_active(firehose_client, name: str, timeout: float = 300, poll: float = 5) -> str:
    """Poll DeliveryStreamStatus until ACTIVE (returned); raises on CREATING_FAILED or after ``timeout``."""
    deadline = time.monotonic() + timeout
    status = "unknown"
    while True:
        try:
            desc = firehose_client.describe_delivery_stream(DeliveryStreamName=name)[
                "DeliveryStreamDescription"
            ]
            status = desc["DeliveryStreamStatus"]
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":  # just created: may not be visible yet
                raise
            status = "not found"
        if status == "ACTIVE":
            return status
        if status in ("CREATING_FAILED", "DELETING_FAILED"):
            reason = desc.get("FailureDescription", {}).get("Details", "no details given")
            raise RuntimeError(f"delivery stream {name} is {status}: {reason}")
        if time.monotonic() + poll > deadline:
            raise TimeoutError(
                f"delivery stream {name} is still {status} after {timeout:g} s: check it in the Firehose "
                "console (or describe_delivery_stream) and call wait_until_active again"
            )
        time.sleep(poll)


def require_active(firehose_client, name: str) -> str:
    """Refuse to go on unless delivery stream ``name`` exists and is ACTIVE (returned). Firehose reads a Kinesis
    source from LATEST once it is active: records put into the stream before that are never delivered."""
    why = "Firehose reads the Kinesis stream from the moment it is ACTIVE: records sent now would never reach S3"
    try:
        status = firehose_client.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"][
            "DeliveryStreamStatus"
        ]
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        raise DeliveryStreamNotActive(
            f"delivery stream {name} does not exist: {why}. Run notebook 03 first, then this cell again"
        ) from exc
    if status != "ACTIVE":
        raise DeliveryStreamNotActive(
            f"delivery stream {name} is {status}, not ACTIVE: {why}. Wait for it (notebook 03 waits), "
            "then run this cell again"
        )
    return status
