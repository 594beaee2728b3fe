"""Teardown deletes what carries the lab's tags and the lab created, and nothing else; running it twice is safe."""

import json

import boto3
import pytest

from kinesis_lab.cloud import teardown
from kinesis_lab.cloud.firehose_config import build_delivery_stream_request, create_delivery_stream

REGION = "us-east-1"
LAB_TAGS = {"project": "kinesis-lab", "course": "kinesis-firehose-s3-databricks"}
PREFIXES = ["bronze/", "errors/"]
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
        teardown.delete_bucket(c("s3"), "lab-bucket", LAB_TAGS, prefixes=PREFIXES),
        teardown.delete_role(c("iam"), "LabRole", LAB_TAGS, lab_policies={"p"}),
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
        teardown.delete_bucket(c("s3"), "lab-bucket", LAB_TAGS, prefixes=PREFIXES),
        teardown.delete_role(c("iam"), "LabRole", LAB_TAGS, lab_policies={"p"}),
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
        teardown.delete_bucket(c("s3"), "someone-elses", LAB_TAGS, prefixes=PREFIXES),
        teardown.delete_bucket(c("s3"), "untagged", LAB_TAGS, prefixes=PREFIXES),
        teardown.delete_role(c("iam"), "LabRole", LAB_TAGS, lab_policies={"p"}),
        teardown.delete_log_group(c("logs"), "/lab/group", LAB_TAGS),
    ]
    assert {r["action"] for r in rows} == {teardown.NOT_OURS}
    assert c("s3").get_object(Bucket="untagged", Key="keep.txt")["Body"].read() == b"precious"
    assert len(c("s3").list_objects_v2(Bucket="someone-elses")["Contents"]) == 3
    assert c("kinesis").list_streams()["StreamNames"] == ["lab-stream"]
    assert c("iam").get_role(RoleName="LabRole")["Role"]["RoleName"] == "LabRole"


def test_in_the_labs_bucket_only_the_labs_prefixes_are_emptied_and_the_bucket_kept_if_more_is_left(c):
    make_lab_resources(c)
    s3 = c("s3")
    s3.put_object(Bucket="lab-bucket", Key="errors/processing-failed/x", Body=b"{}")
    s3.put_object(Bucket="lab-bucket", Key="notes/mine.txt", Body=b"the learner's own")
    s3.put_object(Bucket="lab-bucket", Key="bronze-archive/old.json", Body=b"{}")  # not under "bronze/"
    row = teardown.delete_bucket(s3, "lab-bucket", LAB_TAGS, prefixes=PREFIXES)
    assert row == {"resource": "S3 bucket", "name": "lab-bucket",
                   "action": "kept: 2 objects outside the lab's prefixes (bronze/, errors/); deleted 4 of the lab's"}
    assert teardown.left_alone([row]) == [row]
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="lab-bucket")["Contents"]) == [
        "bronze-archive/old.json", "notes/mine.txt"]
    # once the rest is gone, the next run deletes the (now empty) bucket
    s3.delete_objects(Bucket="lab-bucket", Delete={"Objects": [{"Key": "bronze-archive/old.json"},
                                                               {"Key": "notes/mine.txt"}]})
    assert teardown.delete_bucket(s3, "lab-bucket", LAB_TAGS, prefixes=PREFIXES)["action"] == "deleted (0 objects)"


def test_a_versioned_labs_bucket_loses_every_version_under_the_labs_prefixes(c):
    make_lab_resources(c)
    s3 = c("s3")
    s3.put_bucket_versioning(Bucket="lab-bucket", VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket="lab-bucket", Key="bronze/0.json", Body=b"v2")  # a second version
    s3.delete_object(Bucket="lab-bucket", Key="bronze/1.json")  # a delete marker
    row = teardown.delete_bucket(s3, "lab-bucket", LAB_TAGS, prefixes=PREFIXES)
    assert row["action"] == "deleted (5 objects)"  # 3 first versions, 1 second version, 1 delete marker
    assert "lab-bucket" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_a_lab_role_carrying_a_policy_the_lab_did_not_put_is_kept(c):
    make_lab_resources(c)
    iam = c("iam")
    iam.put_role_policy(RoleName="LabRole", PolicyName="kinesis-admin", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"}]}))
    managed = iam.create_policy(PolicyName="logs-all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "logs:*", "Resource": "*"}]}))
    iam.attach_role_policy(RoleName="LabRole", PolicyArn=managed["Policy"]["Arn"])
    row = teardown.delete_role(iam, "LabRole", LAB_TAGS, lab_policies={"p"})
    assert row["action"] == ("kept: carries policies the lab did not put there: inline policy kinesis-admin; "
                             "attached policy arn:aws:iam::123456789012:policy/logs-all")
    assert sorted(iam.list_role_policies(RoleName="LabRole")["PolicyNames"]) == ["kinesis-admin", "p"]
    assert iam.list_attached_role_policies(RoleName="LabRole")["AttachedPolicies"][0]["PolicyName"] == "logs-all"


def test_a_refused_delete_stops_teardown_instead_of_reporting_the_objects_as_someone_elses(c):
    """delete_objects reports refused keys in its answer: they must not pass for objects the lab left alone."""
    make_lab_resources(c)
    s3 = c("s3")

    def refuse_every_key(parsed, **_):
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="lab-bucket", Prefix="bronze/")["Contents"]]
        parsed["Deleted"] = []
        parsed["Errors"] = [{"Key": k, "Code": "AccessDenied", "Message": "Access Denied"} for k in keys]

    s3.meta.events.register("before-parameter-build.s3.DeleteObjects",
                            lambda params, **_: params["Delete"].update(Objects=[{"Key": "bronze/nothing"}]))
    s3.meta.events.register("after-call.s3.DeleteObjects", refuse_every_key)
    with pytest.raises(RuntimeError, match=r"could not delete 3 of the lab's objects in lab-bucket, e.g. "
                                           r"bronze/0.json: AccessDenied Access Denied"):
        teardown.delete_bucket(s3, "lab-bucket", LAB_TAGS, prefixes=PREFIXES)
    assert len(s3.list_objects_v2(Bucket="lab-bucket", Prefix="bronze/")["Contents"]) == 3
