"""The error branches of the Unity Catalog helpers: AWS errors injected into real calls to the local stack
(a botocore ``before-call`` handler answers the chosen call with the error, nothing reaches moto), Databricks
SDK errors raised by the workspace fakes of test_uc, and the whole flow through the SDK against the Unity
Catalog API stand-in that validates from IAM on the local stack."""

from __future__ import annotations

import json
from types import SimpleNamespace

import boto3
import pytest
from botocore.exceptions import ClientError
from test_uc import EXTERNAL_ID, LAB_BUCKET, LAB_TAGS, ROLE_ARN, ROLE_NAME, URL, FakeWorkspace

from kinesis_lab.cloud import policies, uc
from kinesis_lab.course import databricks_runtime as dbr


def inject(client, operation: str, code: str, times: int = 1) -> list[str]:
    """The next ``times`` calls of ``operation`` answer ``code`` (HTTP 400) without reaching the server;
    returns the list the refused calls are recorded in."""
    refused: list[str] = []

    def answer(**_):
        if len(refused) >= times:
            return None
        refused.append(operation)
        parsed = {"Error": {"Code": code, "Message": f"injected {code}"}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return SimpleNamespace(status_code=400, headers={}), parsed

    client.meta.events.register(f"before-call.{client.meta.service_model.service_name}.{operation}", answer)
    return refused


@pytest.fixture
def iam(aws_clients):
    return aws_clients("iam")


def role_args(iam, external_id=EXTERNAL_ID):
    account = boto3.client("sts", region_name="us-east-1").get_caller_identity()["Account"]
    return dict(role_name=ROLE_NAME, account_id=account, bucket=LAB_BUCKET, external_id=external_id, tags=LAB_TAGS)


def code_of(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_create_role_refused_is_raised_and_nothing_is_made(iam):
    inject(iam, "CreateRole", "LimitExceeded")
    with pytest.raises(ClientError) as err:
        uc.ensure_uc_role(iam, **role_args(iam))
    assert code_of(err) == "LimitExceeded"
    assert ROLE_NAME not in [r["RoleName"] for r in iam.list_roles()["Roles"]]


def test_trust_update_is_retried_while_the_role_propagates(iam):
    uc.ensure_uc_role(iam, **role_args(iam, uc.PLACEHOLDER_EXTERNAL_ID))
    refused = inject(iam, "UpdateAssumeRolePolicy", "MalformedPolicyDocument", times=2)
    slept = []
    result = uc.ensure_uc_role(iam, **role_args(iam), sleep=slept.append)
    assert refused == ["UpdateAssumeRolePolicy"] * 2 and slept == [2, 4] and result["trust_changed"]
    stored = iam.get_role(RoleName=ROLE_NAME)["Role"]["AssumeRolePolicyDocument"]
    assert EXTERNAL_ID in json.dumps(stored)


def test_trust_update_gives_up_after_the_last_delay_and_other_errors_are_not_retried(iam):
    uc.ensure_uc_role(iam, **role_args(iam, uc.PLACEHOLDER_EXTERNAL_ID))
    inject(iam, "UpdateAssumeRolePolicy", "MalformedPolicyDocument", times=10)
    slept = []
    with pytest.raises(ClientError) as err:
        uc.ensure_uc_role(iam, **role_args(iam), sleep=slept.append)
    assert code_of(err) == "MalformedPolicyDocument" and slept == list(uc.PROPAGATION_DELAYS)

    iam2 = boto3.client("iam", region_name="us-east-1")
    inject(iam2, "UpdateAssumeRolePolicy", "AccessDenied")
    slept.clear()
    with pytest.raises(ClientError) as err:
        uc.ensure_uc_role(iam2, **role_args(iam2), sleep=slept.append)
    assert code_of(err) == "AccessDenied" and slept == []
    trust = iam.get_role(RoleName=ROLE_NAME)["Role"]["AssumeRolePolicyDocument"]
    assert EXTERNAL_ID not in json.dumps(trust)  # never written


def test_reading_the_permissions_refused_is_not_taken_for_a_missing_policy(iam):
    uc.ensure_uc_role(iam, **role_args(iam))
    inject(iam, "GetRolePolicy", "AccessDenied")
    with pytest.raises(ClientError) as err:
        uc.ensure_uc_role(iam, **role_args(iam))
    assert code_of(err) == "AccessDenied"


# --- the Databricks SDK's errors ---------------------------------------------------------------------------
def test_credential_lookup_refused_is_raised_not_taken_for_missing():
    from databricks.sdk.errors import PermissionDenied

    w = FakeWorkspace()

    def refused(name):
        raise PermissionDenied("User does not have READ on storage credential")

    w.storage_credentials.get = refused
    with pytest.raises(PermissionDenied):
        uc.create_storage_credential(w, "cred", ROLE_ARN)
    assert w.storage_credentials.items == {}  # nothing created


def test_credential_creation_refused_is_raised():
    from databricks.sdk.errors import PermissionDenied

    w = FakeWorkspace()

    def refused(name, **kwargs):
        raise PermissionDenied("User does not have CREATE STORAGE CREDENTIAL on Metastore")

    w.storage_credentials.create = refused
    with pytest.raises(PermissionDenied, match="CREATE STORAGE CREDENTIAL"):
        uc.create_storage_credential(w, "cred", ROLE_ARN)


def test_location_creation_waits_for_the_trust_then_succeeds():
    w = FakeWorkspace()
    uc.create_storage_credential(w, "cred", ROLE_ARN)
    slept = []

    def trust_applies_after_two_waits(delay):
        slept.append(delay)
        if len(slept) == 2:
            w.storage_credentials.trusted = {EXTERNAL_ID}

    info, message = uc.ensure_external_location(w, "landing", URL, "cred", sleep=trust_applies_after_two_waits)
    assert slept == [2, 4] and message == f"created read-only external location landing -> {URL}"
    assert [c[0] for c in w.external_locations.calls] == ["get", "try create", "try create", "try create", "create"]


def test_location_creation_never_validated_names_the_trust_step():
    w = FakeWorkspace()
    uc.create_storage_credential(w, "cred", ROLE_ARN)
    slept = []
    with pytest.raises(uc.TrustNotUpdated) as err:
        uc.ensure_external_location(w, "landing", URL, "cred", sleep=slept.append)
    assert slept == list(uc.PROPAGATION_DELAYS) and "landing" not in w.external_locations.items
    assert str(err.value).startswith(f"Unity Catalog could not read {URL} with the storage credential cred "
                                     f"(AWS IAM role does not have READ permissions on url {URL}): the UC role must "
                                     "trust the credential's external id")


def test_location_creation_other_errors_are_not_retried():
    from databricks.sdk.errors import InvalidParameterValue

    w = FakeWorkspace()

    def refused(*args, **kwargs):
        raise InvalidParameterValue("URL overlaps with an existing external location")

    w.external_locations.create = refused
    slept = []
    with pytest.raises(InvalidParameterValue, match="overlaps"):
        uc.ensure_external_location(w, "landing", URL, "cred", sleep=slept.append)
    assert slept == []


@pytest.mark.parametrize("url, credential", [("s3://another-bucket/", "cred"), (URL, "another-cred")])
def test_an_existing_location_on_another_url_or_credential_is_an_error_naming_the_fix(url, credential):
    from databricks.sdk.service.catalog import ExternalLocationInfo

    theirs = ExternalLocationInfo(name="landing", url=url, credential_name=credential, read_only=False)
    w = FakeWorkspace(locations={"landing": theirs})
    with pytest.raises(uc.LocationMismatch) as err:
        uc.ensure_external_location(w, "landing", URL, "cred")
    assert str(err.value) == (
        f"external location landing already exists on {url} with credential {credential}, not on {URL} with cred: "
        "the lab will not change it. Drop it (DROP EXTERNAL LOCATION `landing`) if it is the lab's, or choose another "
        "name with location_name, then run again")
    assert [c[0] for c in w.external_locations.calls] == ["get"]  # nothing changed, not even read_only


def test_inside_databricks_a_new_credential_stops_at_once_with_the_iam_step():
    w = FakeWorkspace()
    slept = []
    with pytest.raises(uc.TrustNotUpdated) as err:
        dbr.uc_access_in_workspace(w, credential_name="cred", location_name="landing", url=URL, role_arn=ROLE_ARN,
                                   sleep=slept.append)
    assert slept == [] and uc.trust_step(ROLE_ARN, EXTERNAL_ID) in str(err.value)
    assert uc.trust_step(ROLE_ARN, EXTERNAL_ID) == (
        f"  python -m kinesis_lab.cloud.policies uc trust --external-id {EXTERNAL_ID} > build/uc-trust.json\n"
        f"  aws iam update-assume-role-policy --role-name {ROLE_NAME} --policy-document file://build/uc-trust.json")
    assert "landing" not in w.external_locations.items
    # the re-run, after the learner ran the step: the credential exists, validation passes, the location is made
    w.storage_credentials.trusted = {EXTERNAL_ID}
    access = dbr.uc_access_in_workspace(w, credential_name="cred", location_name="landing", url=URL,
                                        role_arn=ROLE_ARN, sleep=slept.append)
    assert access["message"] == f"created read-only external location landing -> {URL}" and slept == []
    assert uc.failed_read_checks(access["validation"]) == []
    assert dbr.workspace_checks(w, credential_name="cred", location_name="landing", url=URL, role_arn=ROLE_ARN) == {
        "the credential uses the UC role": True, "the credential is read-only": True,
        "the location is the landing bucket": True, "the location uses the credential": True,
        "the location is read-only": True}


# --- off Databricks, the whole flow through the SDK against the UC API stand-in, IAM enforced ---------------
def test_from_the_machine_the_location_follows_the_trust_update(clean_stack, monkeypatch, tmp_path):
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.errors import PermissionDenied
    from databricks_standins import EXTERNAL_ID as ISSUED_ID
    from databricks_standins import UCMaster, UnityCatalogAPI
    from test_uc import iam_enforced, user_with_keys

    iam = boto3.client("iam", region_name="us-east-1")
    admin = user_with_keys(iam, "lab-admin", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"}]})
    iam.create_user(UserName="uc-master")
    iam.put_user_policy(UserName="uc-master", PolicyName="inline", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
    master_key = iam.create_access_key(UserName="uc-master")["AccessKey"]
    for name in ("DATABRICKS_CONFIG_PROFILE", "DATABRICKS_AUTH_TYPE", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))
    account = "123456789012"
    master_arn = f"arn:aws:iam::{account}:user/uc-master"
    with iam_enforced(clean_stack.endpoint), UnityCatalogAPI(uc_master=UCMaster(
            clean_stack.endpoint, master_key["AccessKeyId"], master_key["SecretAccessKey"])) as api:
        monkeypatch.setenv("DATABRICKS_HOST", api.url)
        monkeypatch.setenv("DATABRICKS_TOKEN", api.token)
        w = WorkspaceClient()
        admin.client("s3").create_bucket(Bucket=LAB_BUCKET)
        admin.client("s3").put_object(Bucket=LAB_BUCKET, Key="bronze/x", Body=b"{}\n")
        admin_iam = admin.client("iam")
        args = dict(role_name=ROLE_NAME, account_id=account, bucket=LAB_BUCKET, tags=LAB_TAGS)
        uc.ensure_uc_role(admin_iam, **args, external_id=uc.PLACEHOLDER_EXTERNAL_ID, uc_master_role_arn=master_arn)
        role_arn = policies.role_arn(account, ROLE_NAME)
        uc.create_storage_credential(w, "cred", role_arn)
        # the trust still names the placeholder: Unity Catalog refuses the location, as it validates first
        with pytest.raises(PermissionDenied, match="cannot be assumed"):
            w.external_locations.create("landing", URL, "cred", read_only=True)
        rows = uc.validate_storage_credential(w, "cred", URL, delays=())
        assert uc.failed_read_checks(rows) == ["READ", "LIST"] and "cannot be assumed" in rows[0]["message"]
        # the machine's flow: the role made to trust the issued id, then the location (validated) and the check
        monkeypatch.setattr(uc, "uc_master_role_arn_of", lambda info: master_arn)
        access = uc.uc_access_from_machine(w, admin_iam, credential_name="cred", location_name="landing", url=URL,
                                           **args)
        assert access["role"]["trust_changed"] and ISSUED_ID in json.dumps(access["role"]["new_trust"])
        assert access["message"] == f"created read-only external location landing -> {URL}"
        assert [(r["operation"], r["result"]) for r in access["validation"]] == [("READ", "PASS"), ("LIST", "PASS")]
        assert api.requests[-1][2] == {"storage_credential_name": "cred", "url": URL, "read_only": True,
                                       "external_location_name": "landing"}
    assert api.problems == []


# --- what the lab's moto server checks as AWS does (src/kinesis_lab/local/moto_server.py) --------------------
def test_the_stack_checks_s3_listing_as_s3_listbucket_and_requires_the_external_id(clean_stack):
    from test_uc import iam_enforced, user_with_keys

    iam = boto3.client("iam", region_name="us-east-1")
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=LAB_BUCKET)
    s3.put_object(Bucket=LAB_BUCKET, Key="bronze/x", Body=b"{}\n")
    bucket_arn = f"arn:aws:s3:::{LAB_BUCKET}"
    # AWS checks ListObjectsV2 and HeadBucket as s3:ListBucket; s3:ListObjectsV2 is no IAM action at all
    lister = user_with_keys(iam, "lister", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn}]})
    misnamed = user_with_keys(iam, "misnamed", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListObjectsV2", "s3:HeadBucket"], "Resource": bucket_arn}]})
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:user/lister"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}}}]}
    iam.create_role(RoleName="guarded", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_user_policy(UserName="lister", PolicyName="assume", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
    with iam_enforced(clean_stack.endpoint):
        assert [o["Key"] for o in lister.client("s3").list_objects_v2(Bucket=LAB_BUCKET)["Contents"]] == ["bronze/x"]
        lister.client("s3").head_bucket(Bucket=LAB_BUCKET)
        for call in (lambda: misnamed.client("s3").list_objects_v2(Bucket=LAB_BUCKET),
                     lambda: misnamed.client("s3").head_bucket(Bucket=LAB_BUCKET)):
            with pytest.raises(ClientError) as err:
                call()
            assert code_of(err) in ("AccessDenied", "403")
        sts = lister.client("sts")
        role = "arn:aws:iam::123456789012:role/guarded"
        assert sts.assume_role(RoleArn=role, RoleSessionName="lab-test", ExternalId=EXTERNAL_ID)["Credentials"]
        for kwargs in ({"ExternalId": "wrong"}, {}):  # a wrong id, and none at all (moto allowed that)
            with pytest.raises(ClientError) as err:
                sts.assume_role(RoleArn=role, RoleSessionName="lab-test", **kwargs)
            assert code_of(err) == "AccessDenied"
