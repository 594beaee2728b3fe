"""Is a name free, the lab's, or someone else's? Checked before anything is created, changed or deleted.

The default names are the original course's, so an account that ran that course may already hold a role,
stream or bucket of the same name. The lab treats a resource as its own only if it carries the lab's
``project`` tag (put on it at creation). Anything else of that name is never tagged, changed or deleted:
``require_usable`` stops with the resource and the ``LAB_*`` setting that picks another name.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError

from kinesis_lab.cloud.aws import error_code

ABSENT, OURS, NOT_OURS = "absent", "the lab's", "not the lab's"

# kind -> (what it is, the setting that names it)
KINDS = {
    "firehose_role": ("IAM role", "LAB_FIREHOSE_ROLE_NAME"),
    "uc_role": ("IAM role", "LAB_UC_ROLE_NAME"),
    "stream": ("Kinesis stream", "LAB_STREAM_NAME"),
    "bucket": ("S3 bucket", "LAB_BUCKET"),
    "delivery_stream": ("Firehose delivery stream", "LAB_DELIVERY_STREAM_NAME"),
    "log_group": ("CloudWatch log group", "LAB_DELIVERY_STREAM_NAME"),  # named after the delivery stream
}
MISSING_CODES = {
    "NoSuchEntity", "ResourceNotFoundException", "NoSuchBucket", "404", "NotFound",
}  # fmt: skip


class NotTheLabs(RuntimeError):
    """A resource has the lab's name but is not the lab's; the message names it and the setting to change."""


@dataclass(frozen=True)
class Found:
    kind: str
    name: str
    state: str  # ABSENT, OURS or NOT_OURS
    tags: dict[str, str] | None  # None when absent
    why: str = ""  # for NOT_OURS: what was seen

    @property
    def what(self) -> str:
        return KINDS[self.kind][0]

    @property
    def setting(self) -> str:
        return KINDS[self.kind][1]

    def row(self) -> dict:
        return {"resource": self.what, "name": self.name, "state": self.state, "setting": self.setting}


def is_labs(tags: dict[str, str] | None, lab_tags: dict[str, str]) -> bool:
    return bool(tags) and tags.get("project") == lab_tags["project"]


def _tag_dict(items: list[dict]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items}


def tags_of(client, kind: str, name: str, expected_owner: str | None = None) -> dict[str, str] | None:
    """The resource's tags ({} if it has none), or None if nothing has that name. A bucket of another
    account (``expected_owner`` given) raises ``NotTheLabs``; other errors (access denied) are raised."""
    try:
        if kind in ("firehose_role", "uc_role"):
            return _tag_dict(client.list_role_tags(RoleName=name)["Tags"])
        if kind == "stream":
            return _tag_dict(client.list_tags_for_stream(StreamName=name)["Tags"])
        if kind == "delivery_stream":
            return _tag_dict(client.list_tags_for_delivery_stream(DeliveryStreamName=name)["Tags"])
        if kind == "log_group":
            return dict(client.list_tags_log_group(logGroupName=name)["tags"])
        if kind == "bucket":
            return _bucket_tags(client, name, expected_owner)
    except ClientError as exc:
        if error_code(exc) in MISSING_CODES:
            return None
        raise
    raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")


def _bucket_tags(s3, bucket: str, expected_owner: str | None) -> dict[str, str] | None:
    if expected_owner:
        try:
            s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=expected_owner)
        except ClientError as exc:
            if error_code(exc) in ("403", "AccessDenied"):
                raise NotTheLabs(
                    f"S3 bucket {bucket} belongs to another AWS account (or you may not read it): the lab will "
                    f"not use it. Choose another name with LAB_BUCKET and run this notebook again."
                ) from exc
            raise
    try:
        return _tag_dict(s3.get_bucket_tagging(Bucket=bucket)["TagSet"])
    except ClientError as exc:
        if error_code(exc) == "NoSuchTagSet":
            return {}
        raise


def lookup(client, kind: str, name: str, lab_tags: dict[str, str], expected_owner: str | None = None) -> Found:
    """Who owns ``name``: ABSENT, OURS (carries the lab's project tag) or NOT_OURS."""
    tags = tags_of(client, kind, name, expected_owner)
    if tags is None:
        return Found(kind, name, ABSENT, None)
    if is_labs(tags, lab_tags):
        return Found(kind, name, OURS, tags)
    seen = ", ".join(f"{k}={v}" for k, v in sorted(tags.items())) or "none"
    return Found(kind, name, NOT_OURS, tags, why=f"its tags: {seen}")


def refusal(found: Found, project: str) -> str:
    """The message for one resource that is not the lab's."""
    return (
        f"{found.what} {found.name} already exists and is not this lab's (no tag project={project}; "
        f"{found.why}): the lab will not tag, change or delete it. Choose another name with {found.setting} "
        f"and run this notebook again."
    )


def require_usable(found: list[Found] | Found, lab_tags: dict[str, str]) -> None:
    """Stop (``NotTheLabs``, every conflict in one message) if any name is taken by something not the lab's."""
    found = [found] if isinstance(found, Found) else list(found)
    taken = [f for f in found if f.state == NOT_OURS]
    if taken:
        raise NotTheLabs("\n".join(refusal(f, lab_tags["project"]) for f in taken))


def require_ours(client, kind: str, name: str, lab_tags: dict[str, str], expected_owner: str | None = None) -> bool:
    """True if the lab's resource exists, False if the name is free; ``NotTheLabs`` otherwise."""
    found = lookup(client, kind, name, lab_tags, expected_owner)
    require_usable(found, lab_tags)
    return found.state == OURS


def extra_role_policies(iam, role_name: str, lab_policies: set[str]) -> list[str]:
    """Policies on the role the lab did not put there: inline ones not in ``lab_policies``, and every
    attached managed policy (the lab attaches none)."""
    inline = [
        f"inline policy {name}"
        for page in iam.get_paginator("list_role_policies").paginate(RoleName=role_name)
        for name in page["PolicyNames"]
        if name not in lab_policies
    ]
    attached = [
        f"attached policy {p['PolicyArn']}"
        for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=role_name)
        for p in page["AttachedPolicies"]
    ]
    return inline + attached


def require_only_lab_policies(iam, kind: str, role_name: str, lab_policies: set[str]) -> None:
    """The lab's role must carry exactly the lab's policies: anything else is an error that names it."""
    extra = extra_role_policies(iam, role_name, lab_policies)
    if extra:
        raise NotTheLabs(
            f"{KINDS[kind][0]} {role_name} carries policies the lab did not put there: {'; '.join(extra)}. "
            f"The lab's role may only carry {', '.join(sorted(lab_policies))}: remove the others "
            f"(aws iam delete-role-policy / detach-role-policy) or choose another name with {KINDS[kind][1]}."
        )


def merged_tags(current: dict[str, str], lab_tags: dict[str, str]) -> list[dict]:
    """A TagSet with the lab's tags added to (never replacing) the ones already there."""
    return [{"Key": k, "Value": v} for k, v in {**current, **lab_tags}.items()]


def tag_bucket(s3, bucket: str, lab_tags: dict[str, str]) -> bool:
    """Merge the lab's tags into the bucket's (``put_bucket_tagging`` replaces the whole set). True if it
    changed anything."""
    current = tags_of(s3, "bucket", bucket) or {}
    if all(current.get(k) == v for k, v in lab_tags.items()):
        return False
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": merged_tags(current, lab_tags)})
    return True


def create_stream_tagged(kinesis, name: str, tags: dict[str, str], timeout_attempts: int = 24) -> str:
    """Create an ON_DEMAND stream carrying ``tags``, wait until it is ACTIVE, then read its tags back: an endpoint
    that drops ``create_stream(Tags=...)`` (LocalStack does), or a botocore without that parameter (1.34.0), gets
    them with ``add_tags_to_stream``, so the lab never leaves an untagged stream it cannot tear down. Returns how
    it was tagged (one line)."""
    from botocore.exceptions import ParamValidationError

    try:
        kinesis.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"}, Tags=tags)
    except ParamValidationError:
        kinesis.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 5, "MaxAttempts": timeout_attempts})
    have = {t["Key"]: t["Value"] for t in kinesis.list_tags_for_stream(StreamName=name)["Tags"]}
    missing = {k: v for k, v in tags.items() if have.get(k) != v}
    if not missing:
        return "tagged at creation"
    kinesis.add_tags_to_stream(StreamName=name, Tags=missing)  # the stream is the one just created
    return f"tagged after creation ({', '.join(sorted(missing))}: the endpoint dropped create_stream's Tags)"
