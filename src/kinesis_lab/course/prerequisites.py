"""What a notebook needs before it starts, checked first: one line naming the notebook to run when it is missing.

``require(cfg, lab, "bucket", "stream", ...)`` looks each need up (read-only calls) in the order of the series and
raises ``MissingPrerequisite`` for the first one that is missing. "records_sent" is met by 04's record in the run
summary, or by records in the stream or objects in S3 (another producer, such as the original course's, records
nothing). In a notebook the error shows as that one line, not a traceback (IPython prints what
``_render_traceback_`` returns); papermill and nbval still see a failed cell.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from kinesis_lab.cloud.aws import error_code

NOTEBOOKS = {
    "role": "01_iam_role_and_bucket",
    "bucket": "01_iam_role_and_bucket",
    "stream": "02_kinesis_stream",
    "delivery_stream": "03_firehose_delivery_stream",
    "records_sent": "04_produce_records",
}
_NOT_FOUND = {"NoSuchEntity", "NoSuchBucket", "404", "ResourceNotFoundException"}


class MissingPrerequisite(RuntimeError):
    """A notebook was opened before the one that makes what it needs."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


def _exists(call) -> bool:
    try:
        call()
    except ClientError as exc:
        if error_code(exc) in _NOT_FOUND:
            return False
        raise
    return True


def _stream_has_records(kinesis, name: str) -> bool:
    """Does any shard hold a record (one GetRecords per shard from TRIM_HORIZON)? False if the stream is gone."""
    try:
        for shard in kinesis.list_shards(StreamName=name)["Shards"]:
            iterator = kinesis.get_shard_iterator(StreamName=name, ShardId=shard["ShardId"],
                                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            if kinesis.get_records(ShardIterator=iterator, Limit=1)["Records"]:
                return True
    except ClientError as exc:
        if error_code(exc) not in _NOT_FOUND:
            raise
    return False


def _has(cfg, lab, need: str) -> tuple[bool, str]:
    """(present, what it is) for one need."""
    import boto3

    from kinesis_lab.cloud.summary import read_summary

    region = cfg.region
    if need == "role":
        iam = boto3.client("iam", region_name=region)
        return _exists(lambda: iam.get_role(RoleName=cfg.firehose_role_name)), f"role {cfg.firehose_role_name}"
    if need == "bucket":
        s3 = boto3.client("s3", region_name=region)
        return _exists(lambda: s3.head_bucket(Bucket=lab.bucket)), f"bucket {lab.bucket}"
    if need == "stream":
        kinesis = boto3.client("kinesis", region_name=region)
        found = _exists(lambda: kinesis.describe_stream_summary(StreamName=cfg.stream_name))
        return found, f"stream {cfg.stream_name}"
    if need == "delivery_stream":
        firehose = boto3.client("firehose", region_name=region)
        found = _exists(lambda: firehose.describe_delivery_stream(DeliveryStreamName=cfg.delivery_stream_name))
        return found, f"delivery stream {cfg.delivery_stream_name}"
    if need == "records_sent":  # 04 (or kinesis-lab produce) recorded a sending, or another producer's records landed
        from kinesis_lab.cloud.prefixes import static_prefix

        if "records_sent" in read_summary(cfg.build_dir):
            return True, ""
        prefix = static_prefix(cfg.s3_prefix)
        listed = boto3.client("s3", region_name=region).list_objects_v2(Bucket=lab.bucket, Prefix=prefix, MaxKeys=1)
        found = bool(listed.get("KeyCount")) or _stream_has_records(boto3.client("kinesis", region_name=region),
                                                                     cfg.stream_name)
        return found, (f"nothing sent in this run (no records_sent in build/run-summary.json, no record in stream "
                       f"{cfg.stream_name}, no object under s3://{lab.bucket}/{prefix})")
    raise ValueError(f"unknown prerequisite {need!r}: one of {', '.join(NOTEBOOKS)}")


def require(cfg, lab, *needs: str) -> None:
    """Raise ``MissingPrerequisite`` (one line) for the first of ``needs`` that is missing, in series order."""
    for need in sorted(needs, key=list(NOTEBOOKS).index):
        present, what = _has(cfg, lab, need)
        if not present:
            lost = ""
            if cfg.is_local:
                from kinesis_lab.local import stack

                state = stack.read_state(cfg.state_dir)
                if state is not None and state.lost:
                    lost = " (the local stack was restarted: its AWS state is gone)"
            missing = what if need == "records_sent" else f"{what} does not exist"
            raise MissingPrerequisite(f"{missing}{lost}: run {NOTEBOOKS[need]} first")
