"""Run moto's HTTP server (AWS APIs on 127.0.0.1) without a log line per request, with one performance fix
for large Kinesis loads (same behaviour, no quadratic cost), a cheap health route (``HEALTH_PATH``) that
answers who this server is without touching the AWS state it holds, and fixes that bring moto 5.2 closer
to AWS:

- ``create_stream(Tags=...)`` keeps the tags (moto drops them);
- ``create_delivery_stream`` and ``update_destination`` refuse, with ``InvalidArgumentException`` as AWS does, an
  S3 destination real Firehose rejects at create (``firehose_config.validate_delivery_config``: an unclosed
  ``!{...}``, an expression Prefix without an ErrorOutputPrefix, an ErrorOutputPrefix without
  ``!{firehose:error-output-type}``, BufferingHints out of range, ...). moto accepted them, showed the delivery
  stream ACTIVE, and it never delivered;
- with IAM enforcement on, Kinesis, Firehose and CloudWatch Logs calls (and IAM calls on a role that does not
  exist yet) are checked against the resource's ARN, as on AWS (moto checks them against ``*``, so any policy
  scoped to ARNs was refused);
- a trust policy naming a service principal (``{"Service": "firehose.amazonaws.com"}``) no longer fails with
  HTTP 500: it admits an IAM user *named* after the service (user ``firehose.amazonaws.com``), which stands in
  for the service, since moto cannot act as one;
- S3 requests are checked as the IAM actions AWS checks (moto 5.2.6 checks the API operation's name instead,
  ``s3:ListObjectsV2`` for a listing, which no IAM policy can grant): ``HeadBucket`` as ``s3:ListBucket``, the public access
  block and default encryption as ``s3:*BucketPublicAccessBlock`` / ``s3:*EncryptionConfiguration`` (moto checked
  ``s3:HeadBucket``, ``s3:CreateBucket``, ``s3:ListBucket``), and ``DeleteObjects`` key by key (moto checked the
  bucket's ARN, so a policy scoped to a prefix could delete nothing; here a batch with any refused key is refused
  as a whole, where AWS deletes the others);
- a trust policy's ``StringEquals`` on ``sts:ExternalId`` refuses an AssumeRole that sends no external id (moto
  allowed it);
- a statement that applies only to requests without TLS (``"Bool": {"aws:SecureTransport": "false"}``, as in the
  lab's bucket policy) never applies: moto ignores that condition and denied every object request, while the
  stack stands for AWS's HTTPS endpoints (its own HTTP runs on loopback only). moto cannot check that policy.

With ``LAB_MOTO_AUTH_LOG`` set to a file, every check made while IAM enforcement is on is appended to it as a
JSON line (principal, action, resource, allowed): the tests read which actions a policy was really used for.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

HEALTH_PATH = "/kinesis-lab/health"


def speed_up_kinesis_shards() -> None:
    """moto 5.2 copies all of a shard's keys to find its last sequence number on every put: quadratic on
    big loads. Same answers in O(1) (records is an insertion-ordered dict keyed by sequence number)."""
    from moto.kinesis.models import Shard

    Shard.get_max_sequence_number = lambda self: next(reversed(self.records), 0)
    Shard.get_min_sequence_number = lambda self: next(iter(self.records), 0)


def with_health_route(app, identity: dict):
    """``GET HEALTH_PATH`` -> ``identity`` as JSON (constant time); everything else goes to moto."""
    body = json.dumps(identity).encode()

    def wrapped(environ, start_response):
        if environ.get("PATH_INFO") == HEALTH_PATH:
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return app(environ, start_response)

    return wrapped


def keep_create_stream_tags() -> None:
    from moto.kinesis.responses import KinesisResponse

    create = KinesisResponse.create_stream

    def create_stream(self):
        result = create(self)
        tags = self._get_param("Tags")
        if tags:
            self.kinesis_backend.add_tags_to_stream(None, self._get_param("StreamName"), tags)
        return result

    KinesisResponse.create_stream = create_stream


def _delivery_problems(destination: dict | None) -> None:
    from moto.firehose.exceptions import InvalidArgumentException

    from kinesis_lab.cloud.firehose_config import validate_delivery_config

    problems = validate_delivery_config({"ExtendedS3DestinationConfiguration": destination or {}})
    if problems:
        raise InvalidArgumentException("; ".join(problems))


def refuse_what_firehose_refuses() -> None:
    """Validate S3 destinations at create / update (the update checked merged with what it changes)."""
    from moto.firehose.responses import FirehoseResponse

    create, update = FirehoseResponse.create_delivery_stream, FirehoseResponse.update_destination

    def create_delivery_stream(self):
        for key in ("ExtendedS3DestinationConfiguration", "S3DestinationConfiguration"):
            if self._get_param(key) is not None:
                _delivery_problems(self._get_param(key))
        return create(self)

    def update_destination(self):
        change = self._get_param("ExtendedS3DestinationUpdate") or self._get_param("S3DestinationUpdate")
        stream = self.firehose_backend.delivery_streams.get(self._get_param("DeliveryStreamName"))
        if change is not None and stream is not None and stream.destinations:
            current = stream.destinations[0].get("ExtendedS3") or stream.destinations[0].get("S3") or {}
            _delivery_problems({**current, **change})
        return update(self)

    FirehoseResponse.create_delivery_stream = create_delivery_stream
    FirehoseResponse.update_destination = update_destination


def _enforcing() -> bool:
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    return ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT


def _arn(response, service: str, resource: str, region: bool = True) -> str:
    from moto.utilities.utils import get_partition

    where = response.region if region else ""
    return f"arn:{get_partition(response.region)}:{service}:{where}:{response.current_account}:{resource}"


def _body(response) -> dict:
    try:
        body = json.loads(response.body or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _kinesis_resource(response) -> str:
    from moto.kinesis.utils import decompose_shard_iterator

    body = _body(response)
    if body.get("StreamARN"):
        return body["StreamARN"]
    name = body.get("StreamName")
    if not name and body.get("ShardIterator"):  # GetRecords: moto's iterator starts with the stream name
        try:
            name = decompose_shard_iterator(body["ShardIterator"])[0]
        except (ValueError, UnicodeDecodeError):
            return "*"
    return _arn(response, "kinesis", f"stream/{name}") if name else "*"


def _firehose_resource(response) -> str:
    name = _body(response).get("DeliveryStreamName")
    return _arn(response, "firehose", f"deliverystream/{name}") if name else "*"


def _logs_resource(response) -> str:
    body = _body(response)
    if body.get("resourceArn"):
        return body["resourceArn"]
    group = body.get("logGroupName") or body.get("logGroupIdentifier")
    if not group:
        return "*"
    if group.startswith("arn:"):
        return group
    stream = body.get("logStreamName")
    return _arn(response, "logs", f"log-group:{group}" + (f":log-stream:{stream}" if stream else ""))


def check_resource_arns() -> None:
    """Only while IAM enforcement is on (else moto ignores the resource): parsing a 5 MiB PutRecords body
    twice would slow the default, unchecked runs."""
    from moto.firehose.responses import FirehoseResponse
    from moto.iam.responses import IamResponse
    from moto.kinesis.responses import KinesisResponse
    from moto.logs.responses import LogsResponse

    for cls, resolve in ((KinesisResponse, _kinesis_resource), (FirehoseResponse, _firehose_resource),
                         (LogsResponse, _logs_resource)):
        cls._determine_resource = lambda self, resolve=resolve: resolve(self) if _enforcing() else "*"
    resolve_role = IamResponse._resolve_resource_arn

    def resolve_resource_arn(self, role_name: str) -> str:
        arn = resolve_role(self, role_name)
        if arn == "*" and _enforcing():  # a role about to be created: AWS checks its ARN too
            return _arn(self, "iam", f"role/{role_name}", region=False)
        return arn

    IamResponse._resolve_resource_arn = resolve_resource_arn


def service_principal_stand_ins() -> None:
    from moto.iam.access_control import IAMPolicyStatement

    def check_principal(self, principal: str) -> bool:
        expected = self._statement.get("Principal")
        if not expected or expected == "*":
            return True
        if not isinstance(expected, dict):
            return False
        aws = expected.get("AWS")
        if aws == "*" or principal == aws or (aws is not None and principal in aws):  # moto's own rule
            return True
        services = expected.get("Service") or []
        services = [services] if isinstance(services, str) else services
        return ":user/" in principal and principal.rsplit("/", 1)[-1] in services

    IAMPolicyStatement._check_principal = check_principal


def external_id_required() -> None:
    """A trust condition ``StringEquals`` on ``sts:ExternalId`` is false when the request sends no external id,
    as on AWS (moto compares only the values that are sent, so AssumeRole without ExternalId was allowed)."""
    from moto.iam.policy_conditions import TrustCondition

    verify = TrustCondition.verify_condition

    def verify_condition(self, actual_values: list[str]) -> bool:
        keys = self.context_keys
        if self._condition == "StringEquals" and "sts:ExternalId" in keys and len(actual_values) < len(keys):
            return False
        return verify(self, actual_values)

    TrustCondition.verify_condition = verify_condition


def _only_without_tls(statement: dict) -> bool:
    value = (statement.get("Condition") or {}).get("Bool", {}).get("aws:SecureTransport")
    values = value if isinstance(value, list) else [value]
    return value is not None and all(str(v).lower() == "false" for v in values)


def requests_count_as_tls() -> None:
    from moto.iam.access_control import IAMPolicyStatement, PermissionResult

    is_action_permitted = IAMPolicyStatement.is_action_permitted

    def check(self, *args, **kwargs):
        if _only_without_tls(self._statement):
            return PermissionResult.NEUTRAL
        return is_action_permitted(self, *args, **kwargs)

    IAMPolicyStatement.is_action_permitted = check


def s3_actions_as_aws_checks_them() -> None:
    import xmltodict
    from moto.s3 import responses
    from moto.s3.exceptions import BucketAccessDeniedError, S3AccessDeniedError

    # moto 5.2.6 names the checked action after the API operation (s3:ListObjectsV2, s3:HeadBucket, ...), which
    # no IAM policy can grant; the IAM action moto's S3 sets in ``data["Action"]`` (5.2.5's answer) is AWS's.
    get_action = responses.S3Response._get_action

    def iam_action(self) -> str:
        action = self.data.get("Action") if isinstance(self.data, dict) else None
        return (action[0] if isinstance(action, list) else action) or get_action(self)

    responses.S3Response._get_action = iam_action

    bucket = responses.ACTION_MAP["BUCKET"]
    bucket["HEAD"]["DEFAULT"] = "ListBucket"
    for method, verb in (("GET", "Get"), ("PUT", "Put"), ("DELETE", "Put")):
        bucket[method]["publicAccessBlock"] = f"{verb}BucketPublicAccessBlock"
        bucket[method]["encryption"] = f"{verb}EncryptionConfiguration"

    delete_keys = responses.S3Response._bucket_response_delete_keys

    def key_by_key(self, bucket_name: str, authenticated: bool = True):
        if authenticated or not _enforcing():
            return delete_keys(self, bucket_name, authenticated)
        objects = xmltodict.parse(self.body, strip_whitespace=False)["Delete"].get("Object", [])
        for obj in objects if isinstance(objects, list) else [objects]:
            # AWS: s3:DeleteObject always, and s3:DeleteObjectVersion for a given version (even "null")
            for action in ("DeleteObject", "DeleteObjectVersion") if obj.get("VersionId") else ("DeleteObject",):
                self.data["Action"] = action
                try:
                    self._authenticate_and_authorize_s3_action(bucket_name=bucket_name, key_name=obj["Key"])
                except (BucketAccessDeniedError, S3AccessDeniedError):
                    return delete_keys(self, bucket_name, authenticated=False)
        return delete_keys(self, bucket_name, authenticated=True)

    responses.S3Response._bucket_response_delete_keys = key_by_key


def record_checks(path: str) -> None:
    from moto.iam.access_control import IAMRequestBase

    check = IAMRequestBase.check_action_permitted

    def recorded(self, resource: str) -> None:
        allowed = False
        try:
            check(self, resource)
            allowed = True
        finally:
            line = {"principal": self._access_key.arn, "action": self._action, "resource": resource,
                    "allowed": allowed}
            with open(path, "a") as log:
                log.write(json.dumps(line) + "\n")

    IAMRequestBase.check_action_permitted = recorded


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", required=True, help="the lab's state folder (identifies this server)")
    parser.add_argument("--stack-id", required=True, help="random id of this server, answered on the health route")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    speed_up_kinesis_shards()
    keep_create_stream_tags()
    refuse_what_firehose_refuses()
    check_resource_arns()
    service_principal_stand_ins()
    requests_count_as_tls()
    s3_actions_as_aws_checks_them()
    external_id_required()
    if os.environ.get("LAB_MOTO_AUTH_LOG"):
        record_checks(os.environ["LAB_MOTO_AUTH_LOG"])

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(args.port))
    for sig in (signal.SIGINT, signal.SIGTERM):  # as moto's own main
        signal.signal(sig, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    identity = {"stack_id": args.stack_id, "state_dir": os.path.realpath(args.state_dir), "pid": os.getpid()}
    run_simple(args.host, args.port, with_health_route(app, identity), threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
