"""Whose is a name? The ownership checks the notebooks run before they create, change or delete anything, and
the connection settings they rely on (partition from the caller, LAB_AWS_ENDPOINT_URL)."""

from __future__ import annotations

import json
import os

import boto3
import pytest

from kinesis_lab.cloud import ownership, policies
from kinesis_lab.cloud.config import load_config
from kinesis_lab.local import targets

LAB_TAGS = {"project": "kinesis-lab", "course": "kinesis-firehose-s3-databricks"}
TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "firehose.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def tag_list(tags: dict) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


@pytest.mark.stack
def test_every_kind_is_absent_the_labs_or_not_the_labs(aws_clients):
    iam, kinesis, s3 = aws_clients("iam"), aws_clients("kinesis"), aws_clients("s3")
    firehose, logs = aws_clients("firehose"), aws_clients("logs")
    iam.create_role(RoleName="labs", AssumeRolePolicyDocument=json.dumps(TRUST), Tags=tag_list(LAB_TAGS))
    iam.create_role(RoleName="theirs", AssumeRolePolicyDocument=json.dumps(TRUST))
    kinesis.create_stream(StreamName="labs", ShardCount=1, Tags=LAB_TAGS)  # tags at creation (moto server keeps them)
    kinesis.create_stream(StreamName="theirs", ShardCount=1, Tags={"project": "payroll"})
    s3.create_bucket(Bucket="labs")
    s3.put_bucket_tagging(Bucket="labs", Tagging={"TagSet": tag_list(LAB_TAGS)})
    s3.create_bucket(Bucket="theirs")  # no tags at all
    logs.create_log_group(logGroupName="labs", tags=LAB_TAGS)
    logs.create_log_group(logGroupName="theirs")
    clients = {"firehose_role": iam, "uc_role": iam, "stream": kinesis, "bucket": s3, "log_group": logs,
               "delivery_stream": firehose}
    states = {kind: {name: ownership.lookup(client, kind, name, LAB_TAGS).state
                     for name in ("labs", "theirs", "missing")}
              for kind, client in clients.items()}
    both = {"labs": ownership.OURS, "theirs": ownership.NOT_OURS, "missing": ownership.ABSENT}
    assert states == {
        "firehose_role": both, "uc_role": both, "stream": both, "bucket": both, "log_group": both,
        "delivery_stream": {"labs": ownership.ABSENT, "theirs": ownership.ABSENT, "missing": ownership.ABSENT},
    }
    assert ownership.require_ours(kinesis, "stream", "labs", LAB_TAGS) is True
    assert ownership.require_ours(kinesis, "stream", "missing", LAB_TAGS) is False


@pytest.mark.stack
def test_every_conflict_is_named_with_the_setting_that_picks_another_name(aws_clients):
    iam, s3, logs = aws_clients("iam"), aws_clients("s3"), aws_clients("logs")
    iam.create_role(RoleName="FirehoseToS3Role", AssumeRolePolicyDocument=json.dumps(TRUST))
    s3.create_bucket(Bucket="the-bucket")
    s3.put_bucket_tagging(Bucket="the-bucket", Tagging={"TagSet": tag_list({"project": "payroll", "env": "prod"})})
    logs.create_log_group(logGroupName="/aws/kinesisfirehose/d", tags={"team": "x"})
    found = [ownership.lookup(iam, "firehose_role", "FirehoseToS3Role", LAB_TAGS),
             ownership.lookup(s3, "bucket", "the-bucket", LAB_TAGS, expected_owner="123456789012"),
             ownership.lookup(logs, "log_group", "/aws/kinesisfirehose/d", LAB_TAGS)]
    assert [f.row() for f in found] == [
        {"resource": "IAM role", "name": "FirehoseToS3Role", "state": "not the lab's",
         "setting": "LAB_FIREHOSE_ROLE_NAME"},
        {"resource": "S3 bucket", "name": "the-bucket", "state": "not the lab's", "setting": "LAB_BUCKET"},
        {"resource": "CloudWatch log group", "name": "/aws/kinesisfirehose/d", "state": "not the lab's",
         "setting": "LAB_DELIVERY_STREAM_NAME"},
    ]
    with pytest.raises(ownership.NotTheLabs) as err:
        ownership.require_usable(found, LAB_TAGS)
    tail = "the lab will not tag, change or delete it. Choose another name with {} and run this notebook again."
    assert str(err.value).splitlines() == [
        "IAM role FirehoseToS3Role already exists and is not this lab's (no tag project=kinesis-lab; its tags: "
        "none): " + tail.format("LAB_FIREHOSE_ROLE_NAME"),
        "S3 bucket the-bucket already exists and is not this lab's (no tag project=kinesis-lab; its tags: "
        "env=prod, project=payroll): " + tail.format("LAB_BUCKET"),
        "CloudWatch log group /aws/kinesisfirehose/d already exists and is not this lab's (no tag "
        "project=kinesis-lab; its tags: team=x): " + tail.format("LAB_DELIVERY_STREAM_NAME"),
    ]
    ownership.require_usable([ownership.lookup(iam, "uc_role", "free", LAB_TAGS)], LAB_TAGS)  # free: fine


@pytest.mark.stack
def test_a_bucket_the_caller_cannot_head_is_not_used(aws_clients):
    """On AWS a bucket of another account answers 403 to head_bucket with ExpectedBucketOwner (moto ignores that
    parameter): simulated here by the answer AWS gives."""
    s3 = aws_clients("s3")
    s3.create_bucket(Bucket="taken")

    def forbidden(params, **_):
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadBucket")

    s3.meta.events.register("before-call.s3.HeadBucket", forbidden)
    with pytest.raises(ownership.NotTheLabs) as err:
        ownership.lookup(s3, "bucket", "taken", LAB_TAGS, expected_owner="999999999999")
    assert str(err.value) == (
        "S3 bucket taken belongs to another AWS account (or you may not read it): the lab will not use it. "
        "Choose another name with LAB_BUCKET and run this notebook again.")


@pytest.mark.stack
def test_the_labs_role_must_carry_only_the_labs_policies(aws_clients):
    iam = aws_clients("iam")
    iam.create_role(RoleName="FirehoseToS3Role", AssumeRolePolicyDocument=json.dumps(TRUST), Tags=tag_list(LAB_TAGS))
    doc = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kinesis:*",
                                                              "Resource": "*"}]})
    iam.put_role_policy(RoleName="FirehoseToS3Role", PolicyName=policies.FIREHOSE_POLICY_NAME, PolicyDocument=doc)
    ownership.require_only_lab_policies(iam, "firehose_role", "FirehoseToS3Role", {policies.FIREHOSE_POLICY_NAME})
    iam.put_role_policy(RoleName="FirehoseToS3Role", PolicyName="kinesis-admin", PolicyDocument=doc)
    iam.attach_role_policy(RoleName="FirehoseToS3Role",
                           PolicyArn=iam.create_policy(PolicyName="extra", PolicyDocument=doc)["Policy"]["Arn"])
    with pytest.raises(ownership.NotTheLabs) as err:
        ownership.require_only_lab_policies(iam, "firehose_role", "FirehoseToS3Role", {policies.FIREHOSE_POLICY_NAME})
    assert str(err.value) == (
        "IAM role FirehoseToS3Role carries policies the lab did not put there: inline policy kinesis-admin; attached "
        "policy arn:aws:iam::123456789012:policy/extra. The lab's role may only carry "
        "firehose-delivery-least-privilege: remove the others (aws iam delete-role-policy / detach-role-policy) or "
        "choose another name with LAB_FIREHOSE_ROLE_NAME.")


@pytest.mark.stack
def test_bucket_tags_are_merged_never_replaced(aws_clients):
    s3 = aws_clients("s3")
    s3.create_bucket(Bucket="bucket-b")
    assert ownership.tag_bucket(s3, "bucket-b", LAB_TAGS) is True  # no tag set yet
    s3.put_bucket_tagging(Bucket="bucket-b", Tagging={"TagSet": tag_list({**LAB_TAGS, "cost-center": "42"})})
    assert ownership.tag_bucket(s3, "bucket-b", LAB_TAGS) is False  # already there: nothing written
    s3.put_bucket_tagging(Bucket="bucket-b", Tagging={"TagSet": tag_list({"project": "kinesis-lab", "cost-center": "42"})})
    assert ownership.tag_bucket(s3, "bucket-b", LAB_TAGS) is True
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket="bucket-b")["TagSet"]}
    assert tags == {**LAB_TAGS, "cost-center": "42"}


# --- connecting ------------------------------------------------------------------------------------------
@pytest.mark.stack
def test_aws_target_at_an_endpoint_takes_the_partition_from_the_caller(local_stack, monkeypatch):
    """LAB_AWS_ENDPOINT_URL (LocalStack, a moto server in CI) on target aws: the endpoint is used, the caller's
    keys are kept, and every ARN the lab builds uses the caller's partition (moto answers aws-cn in cn-north-1)."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("LAB_AWS_ENDPOINT_URL", local_stack.endpoint)
    lab = targets.connect(load_config(target="aws", region="cn-north-1"), confirm_aws_costs=True)
    assert (lab.endpoint, os.environ["AWS_ENDPOINT_URL"], os.environ["AWS_ACCESS_KEY_ID"]) == (
        local_stack.endpoint, local_stack.endpoint, "testing")
    assert lab.partition == "aws-cn"
    assert lab.stream_arn == "arn:aws-cn:kinesis:cn-north-1:123456789012:stream/jm-demo-kinesis-lab"
    assert lab.firehose_role_arn == "arn:aws-cn:iam::123456789012:role/FirehoseToS3Role"
    assert lab.uc_role_arn == "arn:aws-cn:iam::123456789012:role/DatabricksUCRoleKinesisLab"
    assert lab.bucket_arn == "arn:aws-cn:s3:::jm-demo-s3-lab-123456789012-cn-north-1"
    rendered = json.dumps([policies.firehose_policies(lab), policies.uc_policies(lab, external_id="x"),
                           policies.learner_policy(lab)])
    assert "arn:aws:" not in rendered.replace(policies.UC_MASTER_ROLE_ARN, "")  # Databricks' own role aside
    assert rendered.count("arn:aws-cn:") > 20


def test_the_endpoint_setting_is_ignored_on_the_local_target(monkeypatch):
    monkeypatch.setenv("LAB_AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setattr(targets, "use_local_stack", lambda cfg, start=True: "http://127.0.0.1:5000")

    class Sts:
        def get_caller_identity(self):
            return {"Account": "123456789012", "Arn": "arn:aws:iam::123456789012:user/moto"}

    monkeypatch.setattr(boto3, "client", lambda *a, **k: Sts())
    lab = targets.connect(load_config(target="local", region="us-east-1"))
    assert lab.endpoint == "http://127.0.0.1:5000" and lab.partition == "aws"
