"""Deleting what the lab created — and only that.

A resource is deleted only if it carries the lab's ``project`` tag (``ownership.lookup``); in the lab's bucket
only the objects under the lab's own prefixes (the Firehose prefix and error prefix) are deleted, and the
bucket itself only if that leaves it empty; a lab role is deleted only if it carries nothing but the lab's
policies. Everything else is left alone and reported.

Each function returns one row for the notebook's results table: resource, name, action. Missing resources
are reported as already gone, so running teardown twice is safe.
"""

from __future__ import annotations

import time

from kinesis_lab.cloud import ownership
from kinesis_lab.cloud.prefixes import static_prefix

GONE = "already gone"
NOT_OURS = "kept: not tagged as this lab's"
KEPT = "kept"  # every row the lab left alone starts with it


def _row(resource: str, name: str, action: str) -> dict:
    return {"resource": resource, "name": name, "action": action}


def _owned(client, kind: str, name: str, lab_tags: dict[str, str], expected_owner: str | None = None):
    """(found, row): a row to return at once when the resource is gone or not the lab's, else None."""
    found = ownership.lookup(client, kind, name, lab_tags, expected_owner)
    if found.state == ownership.ABSENT:
        return found, _row(found.what, name, GONE)
    if found.state == ownership.NOT_OURS:
        return found, _row(found.what, name, NOT_OURS)
    return found, None


def lab_prefixes(cfg) -> list[str]:
    """The fixed start of the Firehose prefix and error prefix: where the lab's objects are."""
    return [static_prefix(cfg.s3_prefix), static_prefix(cfg.error_prefix)]


def _wait_gone(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} still exists after {timeout:.0f} s; run this cell again in a minute")
        time.sleep(2)


def delete_delivery_stream(firehose, name: str, lab_tags: dict[str, str], timeout: float = 300) -> dict:
    found, row = _owned(firehose, "delivery_stream", name, lab_tags)
    if row:
        return row
    firehose.delete_delivery_stream(DeliveryStreamName=name)

    def exists():
        try:
            firehose.describe_delivery_stream(DeliveryStreamName=name)
            return True
        except firehose.exceptions.ResourceNotFoundException:
            return False

    _wait_gone(exists, timeout, f"delivery stream {name}")
    return _row(found.what, name, "deleted")


def delete_stream(kinesis, name: str, lab_tags: dict[str, str], timeout: float = 300) -> dict:
    found, row = _owned(kinesis, "stream", name, lab_tags)
    if row:
        return row
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
    kinesis.get_waiter("stream_not_exists").wait(StreamName=name, WaiterConfig={"Delay": 5, "MaxAttempts": int(timeout / 5)})
    return _row(found.what, name, "deleted")


def _versions(s3, bucket: str, prefix: str | None = None):
    """Every object version and delete marker (``prefix``: under it only), as delete_objects keys (with their
    version id, "null" in a bucket without versioning: a key alone would only add a delete marker to a
    versioned bucket)."""
    kwargs = {"Bucket": bucket} if prefix is None else {"Bucket": bucket, "Prefix": prefix}
    for page in s3.get_paginator("list_object_versions").paginate(**kwargs):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            yield {"Key": v["Key"], "VersionId": v["VersionId"]}


def delete_bucket(s3, bucket: str, lab_tags: dict[str, str], *, prefixes: list[str],
                  expected_owner: str | None = None) -> dict:
    """In a bucket that carries the lab's tags, delete every object (all versions) under ``prefixes`` (the
    lab's: ``lab_prefixes(cfg)``), then the bucket if that left it empty. Other objects are never touched:
    the bucket is then kept, and the row says how many objects it still holds."""
    found, row = _owned(s3, "bucket", bucket, lab_tags, expected_owner)
    if row:
        return row
    deleted = 0
    for prefix in dict.fromkeys(prefixes):
        if not prefix:  # a prefix starting with an expression has no fixed part: it would mean every object
            continue
        keys = list(_versions(s3, bucket, prefix))
        for i in range(0, len(keys), 1000):
            errors = s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[i:i + 1000], "Quiet": True}).get(
                "Errors", [])
            if errors:  # refused keys come back in the answer, not as an exception
                first = errors[0]
                raise RuntimeError(f"could not delete {len(errors)} of the lab's objects in {bucket}, e.g. "
                                   f"{first['Key']}: {first.get('Code')} {first.get('Message', '')}")
            deleted += len(keys[i:i + 1000])
    others = sum(1 for _ in _versions(s3, bucket))
    if others:
        where = ", ".join(p for p in prefixes if p) or "none"
        return _row(found.what, bucket, f"{KEPT}: {others} objects outside the lab's prefixes ({where}); "
                                        f"deleted {deleted} of the lab's")
    s3.delete_bucket(Bucket=bucket)
    return _row(found.what, bucket, f"deleted ({deleted} objects)")


def delete_role(iam, role_name: str, lab_tags: dict[str, str], *, lab_policies: set[str]) -> dict:
    """Delete the lab's inline policies, then the role: only if it carries the lab's tags and no policy
    but ``lab_policies``."""
    found, row = _owned(iam, "firehose_role", role_name, lab_tags)
    if row:
        return row
    extra = ownership.extra_role_policies(iam, role_name, lab_policies)
    if extra:
        return _row(found.what, role_name, f"{KEPT}: carries policies the lab did not put there: {'; '.join(extra)}")
    for policy_name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        iam.delete_role_policy(RoleName=role_name, PolicyName=policy_name)
    iam.delete_role(RoleName=role_name)
    return _row(found.what, role_name, "deleted")


def delete_log_group(logs, name: str, lab_tags: dict[str, str]) -> dict:
    found, row = _owned(logs, "log_group", name, lab_tags)
    if row:
        return row
    logs.delete_log_group(logGroupName=name)
    return _row(found.what, name, "deleted")


def left_alone(rows: list[dict]) -> list[dict]:
    """The rows of what teardown found but did not delete (not the lab's, or holding what is not the lab's)."""
    return [r for r in rows if r["action"].startswith(KEPT)]
