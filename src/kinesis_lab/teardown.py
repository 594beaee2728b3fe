"""Deleting what the lab created — and only that: each resource must carry the lab's ``project`` tag.

Each function returns one row for the notebook's results table: resource, name, action. Missing resources
are reported as already gone, so running teardown twice is safe.
"""

from __future__ import annotations

import time

from botocore.exceptions import ClientError

from kinesis_lab.aws import error_code

GONE = "already gone"
NOT_OURS = "kept: not tagged as this lab's"


def _row(resource: str, name: str, action: str) -> dict:
    return {"resource": resource, "name": name, "action": action}


def _tagged(tags: dict[str, str], lab_tags: dict[str, str]) -> bool:
    return tags.get("project") == lab_tags["project"]


def _wait_gone(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} still exists after {timeout:.0f} s; run this cell again in a minute")
        time.sleep(2)


def delete_delivery_stream(firehose, name: str, lab_tags: dict[str, str], timeout: float = 300) -> dict:
    try:
        tags = {t["Key"]: t["Value"] for t in firehose.list_tags_for_delivery_stream(DeliveryStreamName=name)["Tags"]}
    except firehose.exceptions.ResourceNotFoundException:
        return _row("Firehose delivery stream", name, GONE)
    if not _tagged(tags, lab_tags):
        return _row("Firehose delivery stream", name, NOT_OURS)
    firehose.delete_delivery_stream(DeliveryStreamName=name)

    def exists():
        try:
            firehose.describe_delivery_stream(DeliveryStreamName=name)
            return True
        except firehose.exceptions.ResourceNotFoundException:
            return False

    _wait_gone(exists, timeout, f"delivery stream {name}")
    return _row("Firehose delivery stream", name, "deleted")


def delete_stream(kinesis, name: str, lab_tags: dict[str, str], timeout: float = 300) -> dict:
    try:
        tags = {t["Key"]: t["Value"] for t in kinesis.list_tags_for_stream(StreamName=name)["Tags"]}
    except kinesis.exceptions.ResourceNotFoundException:
        return _row("Kinesis stream", name, GONE)
    if not _tagged(tags, lab_tags):
        return _row("Kinesis stream", name, NOT_OURS)
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
    kinesis.get_waiter("stream_not_exists").wait(StreamName=name, WaiterConfig={"Delay": 5, "MaxAttempts": int(timeout / 5)})
    return _row("Kinesis stream", name, "deleted")


def delete_bucket(s3, bucket: str, lab_tags: dict[str, str]) -> dict:
    """Empty (all versions) and delete the bucket, only if it carries the lab's tags."""
    try:
        tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    except ClientError as exc:
        code = error_code(exc)
        if code in ("NoSuchBucket", "404"):
            return _row("S3 bucket", bucket, GONE)
        if code == "NoSuchTagSet":
            return _row("S3 bucket", bucket, NOT_OURS)
        raise
    if not _tagged(tags, lab_tags):
        return _row("S3 bucket", bucket, NOT_OURS)
    deleted = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        keys = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for i in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[i:i + 1000], "Quiet": True})
            deleted += len(keys[i:i + 1000])
    s3.delete_bucket(Bucket=bucket)
    return _row("S3 bucket", bucket, f"deleted ({deleted} objects)")


def delete_role(iam, role_name: str, lab_tags: dict[str, str]) -> dict:
    """Delete inline and attached policies, then the role, only if it carries the lab's tags."""
    try:
        tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=role_name)["Tags"]}
    except iam.exceptions.NoSuchEntityException:
        return _row("IAM role", role_name, GONE)
    if not _tagged(tags, lab_tags):
        return _row("IAM role", role_name, NOT_OURS)
    for policy_name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        iam.delete_role_policy(RoleName=role_name, PolicyName=policy_name)
    for policy in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=role_name, PolicyArn=policy["PolicyArn"])
    iam.delete_role(RoleName=role_name)
    return _row("IAM role", role_name, "deleted")


def delete_log_group(logs, name: str, lab_tags: dict[str, str]) -> dict:
    try:
        tags = logs.list_tags_log_group(logGroupName=name)["tags"]
    except logs.exceptions.ResourceNotFoundException:
        return _row("CloudWatch log group", name, GONE)
    if not _tagged(tags, lab_tags):
        return _row("CloudWatch log group", name, NOT_OURS)
    logs.delete_log_group(logGroupName=name)
    return _row("CloudWatch log group", name, "deleted")
