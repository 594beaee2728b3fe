"""Teardown deletes what carries the lab's tags, and nothing else; running it twice is safe."""

import json

import boto3
import pytest

from kinesis_lab import teardown
from kinesis_lab.firehose_config import build_delivery_stream_request, create_delivery_stream

REGION = "us-east-1"
LAB_TAGS = {"project": "kinesis-lab", "course": "kinesis-firehose-s3-databricks"}
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "firehose.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


@pytest.fixture
def c(clean_stack):
    return lambda name: boto3.client(name, region_name=REGION)


def make_lab_resources(c, bucket="lab-bucket", tags=LAB_TAGS):
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    c("s3").create_bucket(Bucket=bucket)
    c("s3").put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tag_list})
    for i in range(3):
        c("s3").put_object(Bucket=bucket, Key=f"bronze/{i}.json", Body=b"{}\n")
    c("iam").create_role(RoleName="LabRole", AssumeRolePolicyDocument=json.dumps(TRUST), Tags=tag_list)
    c("iam").put_role_policy(
        RoleName="LabRole",
        PolicyName="p",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
                ],
            }
        ),
    )
    k = c("kinesis")
    k.create_stream(StreamName="lab-stream", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    k.add_tags_to_stream(StreamName="lab-stream", Tags=tags)
    arn = k.describe_stream_summary(StreamName="lab-stream")["StreamDescriptionSummary"]["StreamARN"]
    request = build_delivery_stream_request(
        delivery_stream_name="lab-delivery",
        stream_arn=arn,
        role_arn="arn:aws:iam::123456789012:role/LabRole",
        bucket_arn=f"arn:aws:s3:::{bucket}",
        prefix="bronze/",
        error_output_prefix=None,
        buffer_size_mb=1,
        buffer_interval_seconds=60,
        tags=tags,
    )
    create_delivery_stream(c("firehose"), request)
    c("logs").create_log_group(logGroupName="/lab/group", tags=tags)


def test_teardown_deletes_the_labs_resources_then_reports_them_gone(c):
    make_lab_resources(c)
    rows = [
        teardown.delete_delivery_stream(c("firehose"), "lab-delivery", LAB_TAGS),
        teardown.delete_stream(c("kinesis"), "lab-stream", LAB_TAGS),
        teardown.delete_bucket(c("s3"), "lab-bucket", LAB_TAGS),
        teardown.delete_role(c("iam"), "LabRole", LAB_TAGS),
        teardown.delete_log_group(c("logs"), "/lab/group", LAB_TAGS),
    ]
    assert [r["action"] for r in rows] == ["deleted", "deleted", "deleted (3 objects)", "deleted", "deleted"]
    assert c("firehose").list_delivery_streams()["DeliveryStreamNames"] == []
    assert c("kinesis").list_streams()["StreamNames"] == []
    assert "lab-bucket" not in [b["Name"] for b in c("s3").list_buckets()["Buckets"]]
    assert c("iam").list_roles()["Roles"] == []
    assert c("logs").describe_log_groups()["logGroups"] == []

    again = [
        teardown.delete_delivery_stream(c("firehose"), "lab-delivery", LAB_TAGS),
        teardown.delete_stream(c("kinesis"), "lab-stream", LAB_TAGS),
        teardown.delete_bucket(c("s3"), "lab-bucket", LAB_TAGS),
        teardown.delete_role(c("iam"), "LabRole", LAB_TAGS),
        teardown.delete_log_group(c("logs"), "/lab/group", LAB_TAGS),
    ]
    assert {r["action"] for r in again} == {teardown.GONE}


def test_teardown_never_touches_what_the_lab_did_not_create(c):
    make_lab_resources(c, bucket="someone-elses", tags={"project": "payroll"})
    c("s3").create_bucket(Bucket="untagged")
    c("s3").put_object(Bucket="untagged", Key="keep.txt", Body=b"precious")
    rows = [
        teardown.delete_delivery_stream(c("firehose"), "lab-delivery", LAB_TAGS),
        teardown.delete_stream(c("kinesis"), "lab-stream", LAB_TAGS),
        teardown.delete_bucket(c("s3"), "someone-elses", LAB_TAGS),
        teardown.delete_bucket(c("s3"), "untagged", LAB_TAGS),
        teardown.delete_role(c("iam"), "LabRole", LAB_TAGS),
        teardown.delete_log_group(c("logs"), "/lab/group", LAB_TAGS),
    ]
    assert {r["action"] for r in rows} == {teardown.NOT_OURS}
    assert c("s3").get_object(Bucket="untagged", Key="keep.txt")["Body"].read() == b"precious"
    assert len(c("s3").list_objects_v2(Bucket="someone-elses")["Contents"]) == 3
    assert c("kinesis").list_streams()["StreamNames"] == ["lab-stream"]
    assert c("iam").get_role(RoleName="LabRole")["Role"]["RoleName"] == "LabRole"
