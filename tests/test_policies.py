"""The IAM policy templates in aws-policy/: they render, say exactly what they should, and lint clean."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kinesis_lab.cloud import policies
from kinesis_lab.cloud.aws import LabSession
from kinesis_lab.cloud.config import LabConfig
from kinesis_lab.cloud.firehose_config import build_delivery_stream_request

REPO = Path(__file__).resolve().parents[1]
POLICY_README = REPO / "aws-policy" / "README.md"

# (account, region, bucket, role, partition): a few shapes of real values
CASES = [
    ("123456789012", "us-east-1", "jm-demo-s3-lab-123456789012-us-east-1", "DatabricksUCRoleKinesisLab", "aws"),
    ("000011112222", "eu-west-1", "lab-bucket", "uc-role_2", "aws"),
    ("999988887777", "ap-southeast-2", "a1-b2.c3", "Path.Role+name=ok@x", "aws"),
    ("444455556666", "cn-north-1", "lab-bucket-cn", "uc-role", "aws-cn"),
    ("777788889999", "us-gov-west-1", "lab-bucket-gov", "uc-role", "aws-us-gov"),
]
EXTERNAL_ID = "3f1e2d4c-aaaa-bbbb-cccc-0123456789ab"

FIREHOSE_ACTIONS = {
    "kinesis": {
        "kinesis:DescribeStream",
        "kinesis:GetShardIterator",
        "kinesis:GetRecords",
        "kinesis:ListShards",
    },
    "bucket": {"s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"},
    "objects": {"s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"},
    "logs": {"logs:PutLogEvents"},
}
# read-only: the Databricks pipeline only reads the bucket
UC_ACTIONS = {
    "bucket": {"s3:GetBucketLocation", "s3:ListBucket"},
    "objects": {"s3:GetObject", "s3:GetObjectVersion"},
    "self": {"sts:AssumeRole"},
}


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def values_for(account, region, bucket, role, partition="aws") -> dict:
    return dict(
        partition=partition,
        account_id=account,
        region=region,
        bucket=bucket,
        role_name=role,
        stream_name="jm-demo-kinesis-lab",
        log_group="/aws/kinesisfirehose/salud-firehose-tos3",
        external_id=EXTERNAL_ID,
    )


def actions_by_resource(policy: dict) -> dict[str, set[str]]:
    """resource -> every action allowed on it."""
    out: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        for resource in as_list(statement["Resource"]):
            out.setdefault(resource, set()).update(as_list(statement["Action"]))
    return out


def all_policies(values: dict) -> dict[str, dict]:
    fh = policies.firehose_policies(**values)
    uc = policies.uc_policies(file_events=True, **values)
    return {f"firehose-{k}": v for k, v in fh.items()} | {f"uc-{k}": v for k, v in uc.items()}


def test_every_template_is_rendered_by_the_helpers():
    on_disk = {p.stem for p in (REPO / "aws-policy").glob("*.json")}
    used = {
        *policies.FIREHOSE_TEMPLATES.values(),
        *policies.UC_TEMPLATES.values(),
        policies.UC_FILE_EVENTS_TEMPLATE,
        policies.BUCKET_TLS_TEMPLATE,
        policies.LEARNER_TEMPLATE,
    }
    assert on_disk == used


def test_templates_commit_no_account_ids():
    # the only 12-digit number allowed is Databricks' own account, in the UC master role default (Python)
    for path in (REPO / "aws-policy").glob("*.json"):
        assert not re.search(r"\d{12}", path.read_text()), path.name


@pytest.mark.parametrize("account,region,bucket,role,partition", CASES)
def test_firehose_trust_lets_only_firehose_for_this_account(account, region, bucket, role, partition):
    trust = policies.firehose_policies(**values_for(account, region, bucket, role, partition))["trust"]
    [statement] = trust["Statement"]
    assert statement["Principal"] == {"Service": "firehose.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    # AWS's recommended confused-deputy guard: Firehose passes the caller's account id as external id
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": account}}


@pytest.mark.parametrize("account,region,bucket,role,partition", CASES)
def test_firehose_permissions_are_scoped_to_this_stream_bucket_and_log_stream(account, region, bucket, role, partition):
    permissions = policies.firehose_policies(**values_for(account, region, bucket, role, partition))["permissions"]
    assert actions_by_resource(permissions) == {
        f"arn:{partition}:kinesis:{region}:{account}:stream/jm-demo-kinesis-lab": FIREHOSE_ACTIONS["kinesis"],
        f"arn:{partition}:s3:::{bucket}": FIREHOSE_ACTIONS["bucket"],
        f"arn:{partition}:s3:::{bucket}/*": FIREHOSE_ACTIONS["objects"],
        f"arn:{partition}:logs:{region}:{account}:log-group:/aws/kinesisfirehose/salud-firehose-tos3"
        f":log-stream:{policies.FIREHOSE_LOG_STREAM}": FIREHOSE_ACTIONS["logs"],
    }
    # S3 only in this account's buckets (s3:ResourceAccount), as AWS's guidance for Firehose asks
    for statement in permissions["Statement"]:
        s3_statement = any(a.startswith("s3:") for a in as_list(statement["Action"]))
        expected = {"StringEquals": {"s3:ResourceAccount": account}} if s3_statement else None
        assert statement.get("Condition") == expected, statement["Sid"]


@pytest.mark.parametrize("account,region,bucket,role,partition", CASES)
def test_uc_trust_names_the_uc_master_role_and_the_role_itself_with_the_external_id(
    account, region, bucket, role, partition
):
    rendered = policies.uc_policies(**values_for(account, region, bucket, role, partition))
    [statement] = rendered["trust"]["Statement"]
    assert set(statement["Principal"]["AWS"]) == {
        policies.UC_MASTER_ROLE_ARN,
        f"arn:{partition}:iam::{account}:role/{role}",
    }
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}}
    # created first with this one: it must not name the role that does not exist yet
    [boot] = rendered["bootstrap_trust"]["Statement"]
    assert boot["Principal"] == {"AWS": policies.UC_MASTER_ROLE_ARN}
    assert boot["Condition"] == statement["Condition"]


def test_uc_master_role_default_is_databricks_commercial_aws_one():
    assert policies.UC_MASTER_ROLE_ARN == (
        "arn:aws:iam::414351767826:role/unity-catalog-prod-UCMasterRole-14S5ZJVKOTYTL"
    )


@pytest.mark.parametrize("account,region,bucket,role,partition", CASES)
def test_uc_permissions_are_scoped_to_the_bucket_and_the_role_itself(account, region, bucket, role, partition):
    permissions = policies.uc_policies(**values_for(account, region, bucket, role, partition))["permissions"]
    assert actions_by_resource(permissions) == {
        f"arn:{partition}:s3:::{bucket}": UC_ACTIONS["bucket"],
        f"arn:{partition}:s3:::{bucket}/*": UC_ACTIONS["objects"],
        f"arn:{partition}:iam::{account}:role/{role}": UC_ACTIONS["self"],
    }


def iam_access_levels() -> dict[str, str]:
    """action -> IAM access level (Read, List, Write, ...) from parliament's IAM definitions."""
    import parliament

    return {
        f"{svc['prefix']}:{p['privilege']}": p["access_level"]
        for svc in parliament.iam_definition
        for p in svc["privileges"]
    }


@pytest.mark.parametrize("account,region,bucket,role,partition", CASES)
def test_uc_role_only_reads_s3(account, region, bucket, role, partition):
    permissions = policies.uc_policies(**values_for(account, region, bucket, role, partition))["permissions"]
    assert policies.s3_write_actions(permissions) == []
    levels = iam_access_levels()
    s3_actions = {a for s in permissions["Statement"] for a in as_list(s["Action"]) if a.startswith("s3:")}
    assert {levels[a] for a in s3_actions} == {"Read", "List"}
    # nothing beyond S3 reads but assuming itself, which Databricks requires
    others = {a for s in permissions["Statement"] for a in as_list(s["Action"])} - s3_actions
    assert others == {"sts:AssumeRole"}


def test_s3_write_actions_of_the_other_policies():
    rendered = all_policies(values_for(*CASES[0]))
    assert policies.s3_write_actions(rendered["firehose-permissions"]) == ["s3:AbortMultipartUpload", "s3:PutObject"]
    # file events write the bucket's notification configuration (and SNS/SQS), never an object
    assert policies.s3_write_actions(rendered["uc-file_events"]) == ["s3:PutBucketNotification"]


def test_s3_write_actions_rule():
    statements = [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:List*", "s3:get*", "kinesis:PutRecord"], "Resource": "*"},
        {"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": "*"},
        {"Effect": "Allow", "Action": ["s3:*", "s3:Put*", "*"], "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "*"},  # a deny grants nothing
    ]
    policy = {"Version": "2012-10-17", "Statement": statements}
    assert policies.s3_write_actions(policy) == ["*", "s3:*", "s3:DeleteObject", "s3:Put*"]
    assert policies.s3_write_actions(json.dumps({"Statement": statements[0]})) == []
    # the rule "s3:Get*/s3:List* only read" holds for every S3 action IAM knows
    for action, level in iam_access_levels().items():
        if action.startswith("s3:") and not policies.s3_write_actions({"Statement": [
                {"Effect": "Allow", "Action": action}]}):
            assert level in ("Read", "List"), action


@pytest.mark.parametrize("account,region,bucket,role,partition", CASES)
def test_no_wildcard_actions_and_no_star_resource(account, region, bucket, role, partition):
    for name, policy in all_policies(values_for(account, region, bucket, role, partition)).items():
        for statement in policy["Statement"]:
            for action in as_list(statement["Action"]):
                assert "*" not in action, f"{name}: wildcard action {action}"
            if (
                name == "uc-file_events"
                and statement["Sid"] == "ManagedFileEventsActionsWithoutResourceScope"
            ):
                continue  # checked below: those actions cannot be scoped
            for resource in as_list(statement.get("Resource", [])):
                assert resource != "*", f"{name}: Resource '*' in {statement.get('Sid')}"


def test_file_events_star_resource_only_for_actions_aws_cannot_scope():
    import parliament

    statements = policies.uc_policies(file_events=True, **values_for(*CASES[0]))["file_events"]["Statement"]
    [unscoped] = [s for s in statements if s.get("Resource") == "*"]
    definitions = {
        f"{svc['prefix']}:{p['privilege']}": p for svc in parliament.iam_definition for p in svc["privileges"]
    }
    for action in unscoped["Action"]:
        resource_types = {r["resource_type"] for r in definitions[action]["resource_types"]}
        assert resource_types == {""}, f"{action} supports a resource scope {resource_types}: scope it"
    # everything else is limited to csms-* topics/queues of this account and region, or the bucket
    for statement in statements:
        if statement is not unscoped:
            for resource in as_list(statement["Resource"]):
                assert resource == f"arn:aws:s3:::{CASES[0][2]}" or re.fullmatch(
                    rf"arn:aws:(sns|sqs):{CASES[0][1]}:{CASES[0][0]}:csms-\*", resource
                ), resource


@pytest.mark.parametrize("account,region,bucket,role,partition", CASES)
def test_parliament_finds_nothing(account, region, bucket, role, partition):
    for name, policy in all_policies(values_for(account, region, bucket, role, partition)).items():
        trust_role = f"arn:{partition}:iam::{account}:role/{role}" if "trust" in name else None
        assert policies.lint_policy(policy, trust_role_arn=trust_role) == [], name


def test_parliament_flags_the_original_course_policy():
    # what aws-policy/README.md says the original course granted beyond need: Kinesis write/admin actions
    # and logs:* on every resource. The lint must notice, or "finds nothing" above would mean little.
    stream = "arn:aws:kinesis:us-east-1:123456789012:stream/jm-demo-kinesis-lab"
    original = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "kinesis:CreateStream",
                    "kinesis:DeleteStream",
                    "kinesis:PutRecord",
                    "kinesis:PutRecords",
                    "kinesis:DescribeStream",
                    "kinesis:GetRecords",
                    "kinesis:GetShardIterator",
                    "kinesis:ListShards",
                ],
                "Resource": stream,
            },
            {"Effect": "Allow", "Action": ["logs:*"], "Resource": "*"},
        ],
    }
    findings = policies.lint_policy(original)
    assert [f["issue"] for f in findings] == ["RESOURCE_STAR"]
    assert "logs:PutLogEvents" in findings[0]["detail"]


def test_lint_reads_a_trust_policy_condition_key():
    trust = policies.firehose_policies(**values_for(*CASES[0]))["trust"]
    trust["Statement"][0]["Condition"] = {"StringEquals": {"sts:ExternalIdentifier": "1"}}
    assert [f["issue"] for f in policies.lint_policy(trust)] == ["UNKNOWN_CONDITION_FOR_ACTION"]


def test_missing_placeholder_names_what_to_pass():
    with pytest.raises(policies.PolicyTemplateError) as err:
        policies.render_policy("uc-trust-policy", account_id="123456789012", role_name="r")
    assert str(err.value) == (
        "policy template 'uc-trust-policy' needs a value for: external_id, partition, uc_master_role_arn "
        "(pass external_id=..., partition=..., uc_master_role_arn=...)"
    )


def test_unknown_template_and_unsafe_values_are_refused():
    with pytest.raises(
        policies.PolicyTemplateError, match=r"no policy template 'nope.json'.*firehose-trust-policy"
    ):
        policies.render_policy("nope")
    with pytest.raises(policies.PolicyTemplateError, match="must not contain quotes"):
        policies.render_policy("firehose-trust-policy", account_id='1", "Effect": "Deny')


def test_values_come_from_a_lab_session():
    cfg = LabConfig(region="eu-west-1", home=REPO)
    session = LabSession(
        cfg=cfg, account_id="123456789012", bucket=cfg.bucket_name("123456789012"), endpoint=None
    )
    fh = policies.firehose_policies(session)
    resources = set(actions_by_resource(fh["permissions"]))
    assert f"arn:aws:kinesis:eu-west-1:123456789012:stream/{cfg.stream_name}" in resources
    assert "arn:aws:s3:::jm-demo-s3-lab-123456789012-eu-west-1" in resources
    uc = policies.uc_policies(session, external_id=EXTERNAL_ID)
    assert (
        f"arn:aws:iam::123456789012:role/{cfg.uc_role_name}"
        in uc["trust"]["Statement"][0]["Principal"]["AWS"]
    )


def test_log_stream_matches_the_delivery_stream_request():
    request = build_delivery_stream_request(
        delivery_stream_name="d",
        stream_arn="arn:aws:kinesis:us-east-1:123456789012:stream/s",
        role_arn="arn:aws:iam::123456789012:role/r",
        bucket_arn="arn:aws:s3:::b",
        prefix="p/",
        error_output_prefix=None,
        buffer_size_mb=1,
        buffer_interval_seconds=60,
        log_group="/aws/kinesisfirehose/d",
    )
    logging = request["ExtendedS3DestinationConfiguration"]["CloudWatchLoggingOptions"]
    assert logging["LogStreamName"] == policies.FIREHOSE_LOG_STREAM


def test_policy_diff_shows_only_the_change():
    values = values_for(*CASES[0])
    old = policies.uc_policies(**values)["trust"]
    new = policies.uc_policies(**{**values, "external_id": "new-id"})["trust"]
    diff = policies.policy_diff(old, new)
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == [
        f'-          "sts:ExternalId": "{EXTERNAL_ID}"',
        '+          "sts:ExternalId": "new-id"',
    ]
    assert policies.policy_diff(old, json.loads(json.dumps(old))) == ""
    # IAM may hand a one-item list back as a string: same meaning, no diff
    boot = policies.uc_policies(**values)["bootstrap_trust"]
    as_list_form = json.loads(json.dumps(boot))
    as_list_form["Statement"][0]["Principal"]["AWS"] = [policies.UC_MASTER_ROLE_ARN]
    assert policies.policy_diff(boot, as_list_form) == ""


def test_readme_documents_every_template_and_placeholder():
    readme = POLICY_README.read_text()
    for path in (REPO / "aws-policy").glob("*.json"):
        assert path.name in readme, path.name
        for placeholder in policies.placeholders(path.stem):
            assert f"${{{placeholder}}}" in readme, f"{path.name}: ${{{placeholder}}} not explained"
    for action in set().union(*FIREHOSE_ACTIONS.values(), *UC_ACTIONS.values()):
        assert f"`{action}`" in readme, f"{action} not explained in the README table"
    assert "read_only=True" in readme and "`s3:PutBucketNotification`" in readme


# --- the learner's own policy ---------------------------------------------------------------------------------
LEARNER_VALUES = dict(
    account_id="123456789012", region="eu-west-1", bucket="lab-bucket", stream_name="lab-stream",
    delivery_stream_name="lab-delivery", firehose_role_name="LabFirehoseRole", uc_role_name="LabUCRole",
    log_group="/aws/kinesisfirehose/lab-delivery", landing_prefix="bronze/ingestion_date=", error_prefix="errors/",
)
LEARNER_ACTIONS = {  # resource -> actions: what notebooks 01-06 and 99 call, on the lab's names only
    "role/LabFirehoseRole|role/LabUCRole": {
        "iam:CreateRole", "iam:DeleteRole", "iam:DeleteRolePolicy", "iam:GetRole", "iam:GetRolePolicy",
        "iam:ListAttachedRolePolicies", "iam:ListRolePolicies", "iam:ListRoleTags", "iam:PutRolePolicy",
        "iam:TagRole", "iam:UpdateAssumeRolePolicy"},
    "bucket": {
        "s3:CreateBucket", "s3:DeleteBucket", "s3:GetBucketPolicy", "s3:GetBucketPublicAccessBlock",
        "s3:GetBucketTagging", "s3:GetEncryptionConfiguration", "s3:ListBucket", "s3:ListBucketVersions",
        "s3:PutBucketPolicy", "s3:PutBucketPublicAccessBlock", "s3:PutBucketTagging", "s3:PutEncryptionConfiguration"},
    "stream": {
        "kinesis:AddTagsToStream", "kinesis:CreateStream", "kinesis:DeleteStream", "kinesis:DescribeStream",
        "kinesis:DescribeStreamSummary", "kinesis:ListShards", "kinesis:ListTagsForStream", "kinesis:PutRecords",
        "kinesis:StartStreamEncryption"},
    "demo stream": {  # notebook 04 sends one batch by hand to <stream>-demo, reads it back, deletes it
        "kinesis:AddTagsToStream", "kinesis:CreateStream", "kinesis:DeleteStream", "kinesis:DescribeStream",
        "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards", "kinesis:ListTagsForStream",
        "kinesis:PutRecords"},
    "delivery stream": {
        "firehose:CreateDeliveryStream", "firehose:DeleteDeliveryStream", "firehose:DescribeDeliveryStream",
        "firehose:ListTagsForDeliveryStream", "firehose:TagDeliveryStream"},
    "log group": {
        "logs:CreateLogGroup", "logs:CreateLogStream", "logs:DeleteLogGroup", "logs:ListTagsLogGroup",
        "logs:PutRetentionPolicy", "logs:TagResource"},
}


@pytest.mark.parametrize("partition", ["aws", "aws-cn", "aws-us-gov"])
def test_learner_policy_names_only_the_labs_resources(partition):
    policy = policies.learner_policy(**LEARNER_VALUES, partition=partition)
    arn = f"arn:{partition}"
    pairs = actions_by_resource(policy)
    roles = {f"{arn}:iam::123456789012:role/LabFirehoseRole", f"{arn}:iam::123456789012:role/LabUCRole"}
    assert {r: pairs[r] - {"iam:PassRole"} for r in roles} == {r: LEARNER_ACTIONS["role/LabFirehoseRole|role/LabUCRole"]
                                                               for r in roles}
    assert pairs[f"{arn}:s3:::lab-bucket"] == LEARNER_ACTIONS["bucket"]
    # objects: read what Firehose delivered, delete only under the lab's two prefixes
    assert pairs[f"{arn}:s3:::lab-bucket/bronze/ingestion_date=*"] == {
        "s3:GetObject", "s3:DeleteObject", "s3:DeleteObjectVersion"}
    assert pairs[f"{arn}:s3:::lab-bucket/errors/*"] == {"s3:DeleteObject", "s3:DeleteObjectVersion"}
    assert pairs[f"{arn}:kinesis:eu-west-1:123456789012:stream/lab-stream"] == LEARNER_ACTIONS["stream"]
    assert pairs[f"{arn}:kinesis:eu-west-1:123456789012:stream/lab-stream-demo"] == LEARNER_ACTIONS["demo stream"]
    # StartStreamEncryption is also checked against the KMS key (AWS's alias/aws/kinesis): keys of this account
    assert pairs[f"{arn}:kms:eu-west-1:123456789012:key/*"] == {"kinesis:StartStreamEncryption"}
    assert pairs[f"{arn}:firehose:eu-west-1:123456789012:deliverystream/lab-delivery"] == LEARNER_ACTIONS[
        "delivery stream"]
    group = f"{arn}:logs:eu-west-1:123456789012:log-group:/aws/kinesisfirehose/lab-delivery"
    assert pairs[group] == pairs[group + ":*"] == LEARNER_ACTIONS["log group"]
    assert len(pairs) == 11  # nothing else
    assert "arn:aws:" not in json.dumps(policy) or partition == "aws"


def test_learner_may_pass_only_the_firehose_role_and_only_to_firehose():
    policy = policies.learner_policy(**LEARNER_VALUES)
    passing = [s for s in policy["Statement"] if "iam:PassRole" in as_list(s["Action"])]
    assert passing == [{
        "Sid": "PassTheFirehoseRoleToFirehoseOnly",
        "Effect": "Allow",
        "Action": "iam:PassRole",
        "Resource": "arn:aws:iam::123456789012:role/LabFirehoseRole",
        "Condition": {"StringEquals": {"iam:PassedToService": "firehose.amazonaws.com"}},
    }]
    assert all("Condition" not in s for s in policy["Statement"] if s is not passing[0])


def test_parliament_on_the_learner_policy_finds_only_the_bucket_policy_escalation():
    """Whoever may write a bucket's policy may grant themselves anything on that bucket: parliament says so for
    the object actions the learner policy narrows. The learner needs s3:PutBucketPolicy for the TLS-only policy;
    the narrowing still keeps the lab's own code (teardown) off other objects. aws-policy/README.md explains."""
    findings = policies.lint_policy(policies.learner_policy(**LEARNER_VALUES))
    assert sorted((f["issue"], f["detail"]) for f in findings) == sorted(
        ("RESOURCE_POLICY_PRIVILEGE_ESCALATION", f"Possible resource policy privilege escalation on "
         f"arn:aws:s3:::lab-bucket due to {action} not being allowed, but does allow s3:PutBucketPolicy")
        for action in ("s3:PutObject", "s3:GetObject", "s3:DeleteObject"))


def test_learner_values_come_from_a_lab_session():
    cfg = LabConfig(region="eu-west-1", home=REPO, bucket="lab-bucket", stream_name="lab-stream",
                    delivery_stream_name="lab-delivery", firehose_role_name="LabFirehoseRole",
                    uc_role_name="LabUCRole")
    session = LabSession(cfg=cfg, account_id="123456789012", bucket="lab-bucket", endpoint=None)
    assert policies.learner_values(session) == {**LEARNER_VALUES, "partition": "aws"}
    assert policies.learner_policy(session) == policies.learner_policy(**LEARNER_VALUES)


def test_learner_policy_is_printed_for_an_account_without_calling_aws(capsys, monkeypatch):
    monkeypatch.setattr("kinesis_lab.cloud.aws.connect_account", lambda *a, **k: pytest.fail("no AWS call needed"))
    for var in ("LAB_BUCKET", "LAB_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", "LAB_STREAM_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    policies.main(["learner", "--account-id", "111122223333", "--partition", "aws-cn"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == policies.learner_policy(
        partition="aws-cn", account_id="111122223333", region="us-east-1",
        bucket="jm-demo-s3-lab-111122223333-us-east-1", stream_name="jm-demo-kinesis-lab",
        delivery_stream_name="salud-firehose-tos3", firehose_role_name="FirehoseToS3Role",
        uc_role_name="DatabricksUCRoleKinesisLab", log_group="/aws/kinesisfirehose/salud-firehose-tos3",
        landing_prefix="bronze/ingestion_date=", error_prefix="errors/")


# --- the bucket policy: TLS only -------------------------------------------------------------------------------
def test_bucket_tls_policy_denies_requests_without_tls_on_the_bucket_and_its_objects():
    policy = policies.bucket_tls_policy(None, bucket="lab-bucket", partition="aws-cn")
    assert policy == {"Version": "2012-10-17", "Statement": [{
        "Sid": "KinesisLabDenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": ["arn:aws-cn:s3:::lab-bucket", "arn:aws-cn:s3:::lab-bucket/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }]}
    assert policies.lint_policy(policy) == []


def test_bucket_tls_policy_merges_with_what_the_bucket_has_and_is_idempotent():
    theirs = {"Sid": "AuditorsRead", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
              "Action": "s3:GetObject", "Resource": "arn:aws:s3:::lab-bucket/*"}
    stale_lab = {"Sid": "KinesisLabDenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                 "Resource": "arn:aws:s3:::old-name", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    current = json.dumps({"Version": "2012-10-17", "Id": "kept", "Statement": [theirs, stale_lab]})
    merged = policies.bucket_tls_policy(current, bucket="lab-bucket")
    lab = policies.bucket_tls_policy(None, bucket="lab-bucket")["Statement"][0]
    assert merged == {"Version": "2012-10-17", "Id": "kept", "Statement": [theirs, lab]}
    assert policies.bucket_tls_policy(json.dumps(merged), bucket="lab-bucket") == merged
    single = {"Version": "2012-10-17", "Statement": theirs}  # a lone statement may be an object, not a list
    assert policies.bucket_tls_policy(single, bucket="lab-bucket")["Statement"] == [theirs, lab]


def test_readme_documents_the_learner_policy():
    readme = POLICY_README.read_text()
    for action in set().union(*LEARNER_ACTIONS.values()) | {"iam:PassRole", "s3:GetObject", "s3:DeleteObject",
                                                            "s3:DeleteObjectVersion"}:
        assert f"`{action}`" in readme, f"{action} not explained in the README"
    assert "python -m kinesis_lab.cloud.policies learner" in readme and "RESOURCE_POLICY_PRIVILEGE_ESCALATION" in readme


def test_out_writes_the_policy_only_once_rendered(tmp_path):
    """`> build/x.json` leaves an empty file when the command fails; `--out` writes nothing then."""
    import os
    import subprocess
    import sys

    out = tmp_path / "build" / "trust.json"
    cmd = [sys.executable, "-m", "kinesis_lab.cloud.policies", "firehose", "trust", "--out", str(out)]
    unreachable = {"PATH": os.environ["PATH"], "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
                   "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1",
                   "LAB_STATE_DIR": str(tmp_path / "state")}
    failed = subprocess.run(cmd, capture_output=True, text=True, env=unreachable, timeout=120)
    assert failed.returncode == 1 and not out.exists() and not list(tmp_path.rglob("*.json*"))
    assert failed.stderr.startswith("python -m kinesis_lab.cloud.policies: error: cannot learn the account id (Could "
                                    "not connect to the endpoint URL") and failed.stderr.count("\n") == 1
    done = subprocess.run([*cmd, "--account-id", "123456789012"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {out}\n"
    assert json.loads(out.read_text())["Statement"][0]["Principal"] == {"Service": "firehose.amazonaws.com"}
