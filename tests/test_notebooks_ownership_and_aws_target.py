"""The notebooks themselves, with papermill, on a private local stack each test starts:

- resources of the lab's names that are not the lab's (as left by the original course) stop 01 and 02, and
  99_teardown leaves them exactly as they were;
- target "aws" pointed at the stack (LAB_AWS_ENDPOINT_URL), run by an IAM user that holds only the learner
  policy, with IAM enforcement on: 01-06 and 99 pass, so every line that runs on a real account runs here,
  and the learner policy holds no action the notebooks do not use.

What moto cannot check (so neither can these tests): iam:PassRole and the permissions AWS checks for tags given
at creation (iam:TagRole, kinesis:AddTagsToStream, firehose:TagDeliveryStream, logs:TagResource) and for the KMS
key of StartStreamEncryption; any condition in an identity policy (iam:PassedToService, s3:ResourceAccount); the
TLS-only bucket policy (the stack speaks HTTP on loopback and counts as TLS); the Firehose service itself (an IAM
user named firehose.amazonaws.com stands in for it, and reads Kinesis as itself, not as the role).
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import nbformat
import papermill
import pytest
from botocore.exceptions import ClientError
from helpers import DENIED, error_code

from kinesis_lab.cloud import policies
from kinesis_lab.cloud.prefixes import static_prefix
from kinesis_lab.local import stack
from kinesis_lab.local.stack import set_iam_enforcement

pytestmark = [pytest.mark.notebooks, pytest.mark.stack]

REPO = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's
ROLE = "FirehoseToS3Role"
STREAM = "jm-demo-kinesis-lab"
BUCKET = f"jm-demo-s3-lab-{ACCOUNT}-{REGION}"
DELIVERY = "salud-firehose-tos3"
LOG_GROUP = f"/aws/kinesisfirehose/{DELIVERY}"
UC_ROLE = "DatabricksUCRoleKinesisLab"


ENDPOINT: list[str] = []  # the running private stack's


@pytest.fixture
def private_stack(tmp_path, monkeypatch):
    """A stack of this test's own; the notebooks' kernels reach it through LAB_STATE_DIR (local) or
    LAB_AWS_ENDPOINT_URL (aws). This process talks to it with the stack's (admin) dummy keys."""
    state_dir = tmp_path / "stack"
    monkeypatch.setenv("LAB_MOTO_AUTH_LOG", str(tmp_path / "auth.jsonl"))  # what moto checks, with IAM enforced
    state, _ = stack.up(state_dir, REGION)
    ENDPOINT[:] = [state.endpoint]
    for key, value in {**stack.local_env(state.endpoint, REGION), "LAB_STATE_DIR": str(state_dir),
                       "LAB_BUILD_DIR": str(tmp_path / "build")}.items():
        monkeypatch.setenv(key, value)
    for key in ("LAB_TARGET", "LAB_REGION", "LAB_AWS_ENDPOINT_URL", "LAB_CONFIRM_AWS_COSTS", "AWS_PROFILE",
                "AWS_SESSION_TOKEN", "LAB_BUCKET", "LAB_STREAM_NAME", "LAB_FIREHOSE_ROLE_NAME", "LAB_UC_ROLE_NAME",
                "LAB_DELIVERY_STREAM_NAME", "DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))  # 06: no workspace
    try:
        yield state, state_dir
    finally:
        try:
            set_iam_enforcement(state.endpoint, False)
        finally:
            stack.down(state_dir)


def admin(service: str):
    """A client of the private stack with its dummy (all-powerful while IAM enforcement is off) keys."""
    return boto3.client(service, region_name=REGION, endpoint_url=ENDPOINT[0],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def run(tmp_path, number: str, **parameters):
    [path] = (REPO / "notebooks").glob(f"{number}_*.ipynb")
    out = tmp_path / "executed" / path.name
    out.parent.mkdir(exist_ok=True)
    papermill.execute_notebook(str(path), str(out), parameters=parameters, cwd=str(path.parent),
                               progress_bar=False, kernel_name="python3")
    return nbformat.read(out, as_version=4)


def printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


# --- what someone else (the original course) left in the account ----------------------------------------
FOREIGN_TAGS = [{"Key": "project", "Value": "payroll"}, {"Key": "owner", "Value": "finance"}]
FOREIGN_OBJECTS = {"bronze/ingestion_date=2025/01/01/payroll-1": b"salaries\n", "reports/q1.csv": b"a,b\n1,2\n",
                   "errors/old.json": b"{}"}
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"}]}
SERVICE_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "firehose.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def leave_the_original_courses_resources():
    iam, kinesis, s3 = admin("iam"), admin("kinesis"), admin("s3")
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(SERVICE_TRUST))
    iam.put_role_policy(RoleName=ROLE, PolicyName="kinesis-admin", PolicyDocument=json.dumps(ADMIN_POLICY))
    managed = iam.create_policy(PolicyName="logs-everything", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "logs:*", "Resource": "*"}]}))
    iam.attach_role_policy(RoleName=ROLE, PolicyArn=managed["Policy"]["Arn"])
    kinesis.create_stream(StreamName=STREAM, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    kinesis.put_record(StreamName=STREAM, Data=b"not the lab's", PartitionKey="k")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": FOREIGN_TAGS})
    for key, body in FOREIGN_OBJECTS.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def snapshot() -> dict:
    """Everything the lab could have changed on those three, read back from moto."""
    iam, kinesis, s3 = admin("iam"), admin("kinesis"), admin("s3")
    role = iam.get_role(RoleName=ROLE)["Role"]
    summary = kinesis.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]
    try:
        bucket_policy = s3.get_bucket_policy(Bucket=BUCKET)["Policy"]
    except ClientError as exc:
        bucket_policy = exc.response["Error"]["Code"]
    return {
        "role tags": iam.list_role_tags(RoleName=ROLE)["Tags"],
        "role trust": policies.canonical(role["AssumeRolePolicyDocument"]),
        "role inline": {n: policies.canonical(iam.get_role_policy(RoleName=ROLE, PolicyName=n)["PolicyDocument"])
                        for n in iam.list_role_policies(RoleName=ROLE)["PolicyNames"]},
        "role attached": iam.list_attached_role_policies(RoleName=ROLE)["AttachedPolicies"],
        "stream tags": kinesis.list_tags_for_stream(StreamName=STREAM)["Tags"],
        "stream encryption": summary.get("EncryptionType"),
        "bucket tags": s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"],
        "bucket policy": bucket_policy,
        "objects": {o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
                    for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]},
    }


def refusal(what: str, name: str, tags: str, setting: str) -> str:
    return (f"{what} {name} already exists and is not this lab's (no tag project=kinesis-lab; its tags: {tags}): "
            f"the lab will not tag, change or delete it. Choose another name with {setting} and run this notebook "
            "again.")


def test_names_taken_by_someone_else_stop_01_and_02_and_teardown_keeps_them(private_stack, tmp_path):
    leave_the_original_courses_resources()
    before = snapshot()
    assert before["role attached"] and before["role inline"] and before["objects"] == FOREIGN_OBJECTS

    with pytest.raises(papermill.PapermillExecutionError) as err:
        run(tmp_path, "01")
    assert err.value.ename == "NotTheLabs"
    assert err.value.evalue == "\n".join([
        refusal("IAM role", ROLE, "none", "LAB_FIREHOSE_ROLE_NAME"),
        refusal("S3 bucket", BUCKET, "owner=finance, project=payroll", "LAB_BUCKET"),
    ])
    with pytest.raises(papermill.PapermillExecutionError) as err:
        run(tmp_path, "02")
    assert err.value.evalue == refusal("Kinesis stream", STREAM, "none", "LAB_STREAM_NAME")

    teardown = run(tmp_path, "99", confirm=True, stop_local_stack=False)
    assert snapshot() == before  # tags, policies, trust, objects, bucket policy: all as they were
    left = sorted(line for line in printed(teardown).splitlines() if line.startswith("left alone:"))
    assert left == sorted([
        f"left alone: IAM role {ROLE} (kept: not tagged as this lab's)",
        f"left alone: Kinesis stream {STREAM} (kept: not tagged as this lab's)",
        f"left alone: S3 bucket {BUCKET} (kept: not tagged as this lab's)",
    ])
    # and the lab made nothing of its own on the way
    assert admin("firehose").list_delivery_streams()["DeliveryStreamNames"] == []
    assert admin("logs").describe_log_groups()["logGroups"] == []
    assert [r["RoleName"] for r in admin("iam").list_roles()["Roles"]] == [ROLE]


# --- target aws, as a learner holding only the learner policy, IAM enforced ------------------------------
def user_keys(iam, name: str, policy: dict) -> dict[str, str]:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="only-this", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def firehose_service_stand_in_policy() -> dict:
    """What the local delivery service does as the Firehose service: find delivery streams, read the source
    stream (on AWS Firehose reads it as the role; here as itself) and assume the role to write S3."""
    arn = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:{{}}"
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "firehose:ListDeliveryStreams", "Resource": "*"},
        {"Effect": "Allow", "Action": "firehose:DescribeDeliveryStream",
         "Resource": arn.format("firehose", f"deliverystream/{DELIVERY}")},
        {"Effect": "Allow", "Action": ["kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:ListShards",
                                       "kinesis:GetShardIterator", "kinesis:GetRecords"],
         "Resource": arn.format("kinesis", f"stream/{STREAM}")},
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": f"arn:aws:iam::{ACCOUNT}:role/{ROLE}"},
    ]}


# moto never checks these (see the module docstring); every other action of the learner policy must be used
NOT_CHECKED_BY_MOTO = {"iam:PassRole", "iam:TagRole", "kinesis:AddTagsToStream", "firehose:TagDeliveryStream",
                       "logs:TagResource"}


def policy_actions(policy: dict) -> set[str]:
    return {a for st in policy["Statement"] for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}


def test_the_aws_target_runs_01_to_06_and_99_as_a_learner_with_only_the_learner_policy(
        private_stack, tmp_path, monkeypatch):
    state, state_dir = private_stack
    cfg_values = dict(account_id=ACCOUNT, region=REGION, bucket=BUCKET, stream_name=STREAM,
                      delivery_stream_name=DELIVERY, firehose_role_name=ROLE, uc_role_name=UC_ROLE,
                      log_group=LOG_GROUP, landing_prefix="bronze/ingestion_date=", error_prefix="errors/")
    learner_policy = policies.learner_policy(**cfg_values)
    iam = admin("iam")
    learner = user_keys(iam, "learner", learner_policy)
    # moto cannot act as the Firehose service: a user named after it stands in (see kinesis_lab.local.moto_server)
    service = user_keys(iam, "firehose.amazonaws.com", firehose_service_stand_in_policy())
    stack.restart_firehose(state_dir, REGION, env=service)
    someone_else = admin("s3")
    someone_else.create_bucket(Bucket="not-the-labs")
    someone_else.put_object(Bucket="not-the-labs", Key="keep.txt", Body=b"precious")

    for key, value in {**learner, "LAB_AWS_ENDPOINT_URL": state.endpoint, "LAB_BUFFER_INTERVAL_SECONDS": "5"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the aws target sets it from LAB_AWS_ENDPOINT_URL itself
    set_iam_enforcement(state.endpoint, True)
    aws = {"target": "aws", "confirm_aws_costs": True}
    for number in ("01", "02", "03", "04"):
        run(tmp_path, number, **aws)
    landed = run(tmp_path, "05", **aws)
    assert "all 540 records are in S3" in printed(landed)
    run(tmp_path, "06", **aws)  # the UC role (no Databricks workspace: the IAM half only)

    # enforcement was on, and the learner policy is scoped: other names are refused
    as_learner = boto3.Session(aws_access_key_id=learner["AWS_ACCESS_KEY_ID"],
                               aws_secret_access_key=learner["AWS_SECRET_ACCESS_KEY"], region_name=REGION)
    client = as_learner.client
    ep = {"endpoint_url": state.endpoint}
    refused = {
        "another stream": lambda: client("kinesis", **ep).create_stream(StreamName="other", ShardCount=1),
        "another role": lambda: client("iam", **ep).create_role(RoleName="Other",
                                                                  AssumeRolePolicyDocument=json.dumps(SERVICE_TRUST)),
        "another bucket's objects": lambda: client("s3", **ep).get_object(Bucket="not-the-labs", Key="keep.txt"),
        "deleting outside the lab's prefixes": lambda: client("s3", **ep).delete_object(
            Bucket=BUCKET, Key="reports/x.csv"),
        "another log group": lambda: client("logs", **ep).create_log_group(logGroupName="/other"),
        "another delivery stream": lambda: client("firehose", **ep).delete_delivery_stream(DeliveryStreamName="x"),
        "listing every bucket": lambda: client("s3", **ep).list_buckets(),
    }
    assert {what for what, call in refused.items() if error_code(call) not in DENIED} == set()

    # what the notebooks made, read back (as the stack's admin, auth still on: the dummy keys are refused)
    set_iam_enforcement(state.endpoint, False)
    s3, kinesis, logs = admin("s3"), admin("kinesis"), admin("logs")
    assert kinesis.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]["EncryptionType"] == "KMS"
    assert {"Key": "project", "Value": "kinesis-lab"} in s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"]
    [statement] = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} and statement["Effect"] == "Deny"
    [group] = logs.describe_log_groups(logGroupNamePrefix=LOG_GROUP)["logGroups"]
    assert group["retentionInDays"] == 14
    landed_keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert landed_keys and all(k.startswith(static_prefix("bronze/ingestion_date=")) for k in landed_keys)
    set_iam_enforcement(state.endpoint, True)

    gone = run(tmp_path, "99", target="aws", confirm=True)
    assert "nothing of the lab is left" in printed(gone)
    set_iam_enforcement(state.endpoint, False)
    assert BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert kinesis.list_streams()["StreamNames"] == []
    assert admin("firehose").list_delivery_streams()["DeliveryStreamNames"] == []
    assert [r["RoleName"] for r in admin("iam").list_roles()["Roles"]] == []
    assert logs.describe_log_groups()["logGroups"] == []
    assert s3.get_object(Bucket="not-the-labs", Key="keep.txt")["Body"].read() == b"precious"

    # every action the learner was allowed is in the policy (enforcement), and every action of the policy that
    # moto can check was used by the notebooks: the policy holds nothing they do not need
    checks = [json.loads(line) for line in (tmp_path / "auth.jsonl").read_text().splitlines()]
    by_learner = [c for c in checks if c["principal"] == f"arn:aws:iam::{ACCOUNT}:user/learner"]
    used = {c["action"] for c in by_learner if c["allowed"]} - {"sts:GetCallerIdentity"}  # needs no permission
    assert used == policy_actions(learner_policy) - NOT_CHECKED_BY_MOTO
