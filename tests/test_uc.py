"""Unity Catalog access: the UC role on the local stack with IAM enforcement on, the SQL templates, and
the Databricks helpers that need no workspace."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from kinesis_lab.cloud import ownership, policies, uc
from kinesis_lab.local.stack import set_iam_enforcement

REPO = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
LAB_BUCKET = "jm-demo-s3-lab-123456789012-us-east-1"
OTHER_BUCKET = "someone-elses-bucket"
ROLE_NAME = "DatabricksUCRoleKinesisLab"
EXTERNAL_ID = "3f1e2d4c-aaaa-bbbb-cccc-0123456789ab"
LAB_TAGS = {"project": "kinesis-lab"}
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


# --- the UC role on moto, IAM enforced ---------------------------------------------------------------------
@contextmanager
def iam_enforced(endpoint: str):
    set_iam_enforcement(endpoint, True)
    try:
        yield
    finally:
        set_iam_enforcement(endpoint, False)  # the rest of the session runs with dummy keys


def user_with_keys(iam, name: str, policy: dict | None = None) -> boto3.Session:
    iam.create_user(UserName=name)
    if policy:
        iam.put_user_policy(UserName=name, PolicyName="inline", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return boto3.Session(
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], region_name=REGION
    )


def session_from(credentials: dict) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    )


def denied(call) -> bool:
    try:
        call()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] in ("AccessDenied", "403"), exc.response["Error"]
        return True
    return False


def test_uc_role_on_the_stack_with_iam_enforced(clean_stack):
    iam = boto3.client("iam", region_name=REGION)
    account = boto3.client("sts", region_name=REGION).get_caller_identity()["Account"]
    # set up while auth is off: an admin to do the work, and a user standing in for Databricks' UC master
    # role (moto cannot hold Databricks' account; only the principal's ARN differs from real AWS)
    admin = user_with_keys(iam, "lab-admin", ALLOW_ALL)
    databricks = user_with_keys(
        iam,
        "uc-master-stand-in",
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "sts:AssumeRole",
                    "Resource": policies.role_arn(account, ROLE_NAME),
                }
            ],
        },
    )
    stand_in_arn = f"arn:aws:iam::{account}:user/uc-master-stand-in"
    admin_iam = admin.client("iam")
    create_role_trust = []  # what create_role really sent, seen through botocore's event hook
    admin_iam.meta.events.register(
        "before-parameter-build.iam.CreateRole",
        lambda params, **_: create_role_trust.append(json.loads(params["AssumeRolePolicyDocument"])),
    )

    with iam_enforced(clean_stack.endpoint):
        s3 = admin.client("s3")
        for bucket in (LAB_BUCKET, OTHER_BUCKET):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=LAB_BUCKET, Key="bronze/ingestion_date=2026/01/01/batch-1", Body=b'{"a": 1}\n')
        s3.put_object(Bucket=OTHER_BUCKET, Key="secret.json", Body=b"{}")

        first = uc.ensure_uc_role(
            admin_iam,
            role_name=ROLE_NAME,
            account_id=account,
            bucket=LAB_BUCKET,
            external_id=uc.PLACEHOLDER_EXTERNAL_ID,
            tags={"project": "kinesis-lab"},
            uc_master_role_arn=stand_in_arn,
        )
        # created first with the UC master principal only, then the role was added to its own trust
        assert create_role_trust == [json.loads(json.dumps(first["old_trust"]))]
        assert create_role_trust[0]["Statement"][0]["Principal"] == {"AWS": stand_in_arn}
        assert first["created"] and first["trust_changed"] and first["permissions_changed"]
        stored = admin_iam.get_role(RoleName=ROLE_NAME)["Role"]
        assert policies.canonical(stored["AssumeRolePolicyDocument"]) == policies.canonical(
            first["new_trust"]
        )
        assert {"Key": "project", "Value": "kinesis-lab"} in stored["Tags"]

        # Databricks issues the real external id: run again, only the trust condition changes
        second = uc.ensure_uc_role(
            admin_iam,
            role_name=ROLE_NAME,
            account_id=account,
            bucket=LAB_BUCKET,
            external_id=EXTERNAL_ID,
            tags={"project": "kinesis-lab"},
            uc_master_role_arn=stand_in_arn,
        )
        assert (second["created"], second["trust_changed"], second["permissions_changed"]) == (
            False,
            True,
            False,
        )
        diff = policies.policy_diff(second["old_trust"], second["new_trust"])
        assert f'-          "sts:ExternalId": "{uc.PLACEHOLDER_EXTERNAL_ID}"' in diff.splitlines()
        assert f'+          "sts:ExternalId": "{EXTERNAL_ID}"' in diff.splitlines()
        third = uc.ensure_uc_role(
            admin_iam,
            role_name=ROLE_NAME,
            account_id=account,
            bucket=LAB_BUCKET,
            external_id=EXTERNAL_ID,
            tags={"project": "kinesis-lab"},
            uc_master_role_arn=stand_in_arn,
        )
        assert (third["created"], third["trust_changed"], third["permissions_changed"]) == (
            False,
            False,
            False,
        )

        sts = databricks.client("sts")
        role_arn = second["role_arn"]

        def assume(**kw):
            return sts.assume_role(RoleArn=role_arn, RoleSessionName="databricks-uc", **kw)["Credentials"]

        assert denied(lambda: assume(ExternalId="wrong-id"))
        assert denied(lambda: assume(ExternalId=uc.PLACEHOLDER_EXTERNAL_ID))  # the old id no longer works
        # with NO external id at all AWS denies it too: the StringEquals condition has no value to match
        # (moto allowed it; the lab's moto server refuses it: moto_server.external_id_required)
        assert denied(lambda: assume())
        # a principal the trust policy does not name is refused even with the right id and sts:* rights
        assert denied(
            lambda: admin.client("sts").assume_role(
                RoleArn=role_arn, RoleSessionName="admin", ExternalId=EXTERNAL_ID
            )
        )
        as_role = session_from(assume(ExternalId=EXTERNAL_ID))

        role_s3 = as_role.client("s3")
        listed = role_s3.list_objects_v2(Bucket=LAB_BUCKET, Prefix="bronze/")["Contents"]
        assert [o["Key"] for o in listed] == ["bronze/ingestion_date=2026/01/01/batch-1"]
        assert role_s3.get_object(Bucket=LAB_BUCKET, Key=listed[0]["Key"])["Body"].read() == b'{"a": 1}\n'
        assert role_s3.get_bucket_location(Bucket=LAB_BUCKET)["LocationConstraint"] in (None, REGION)
        # read-only: the role can neither add, overwrite nor delete a file in the lab bucket
        assert denied(lambda: role_s3.put_object(Bucket=LAB_BUCKET, Key="_validation/probe", Body=b"x"))
        assert denied(lambda: role_s3.put_object(Bucket=LAB_BUCKET, Key=listed[0]["Key"], Body=b"x"))
        assert denied(lambda: role_s3.delete_object(Bucket=LAB_BUCKET, Key=listed[0]["Key"]))
        bulk = role_s3.delete_objects(Bucket=LAB_BUCKET, Delete={"Objects": [{"Key": listed[0]["Key"]}]})
        assert [e["Code"] for e in bulk["Errors"]] == ["AccessDenied"] and not bulk.get("Deleted")  # per key
        assert s3.get_object(Bucket=LAB_BUCKET, Key=listed[0]["Key"])["Body"].read() == b'{"a": 1}\n'
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=LAB_BUCKET)["Contents"]] == [listed[0]["Key"]]
        assert denied(lambda: role_s3.get_object(Bucket=OTHER_BUCKET, Key="secret.json"))
        assert denied(lambda: role_s3.list_objects_v2(Bucket=OTHER_BUCKET))
        assert denied(lambda: role_s3.put_object(Bucket=OTHER_BUCKET, Key="x", Body=b"x"))
        assert denied(lambda: as_role.client("iam").list_roles())

        # moto gap: on AWS the role may assume itself (the trust policy names its ARN and the permissions
        # policy allows it); moto compares the caller's assumed-role session ARN with the role ARN and denies.
        assert denied(
            lambda: as_role.client("sts").assume_role(
                RoleArn=role_arn, RoleSessionName="self", ExternalId=EXTERNAL_ID
            )
        )

    # enforcement is off again for the rest of the session
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"]


def test_a_read_write_policy_left_by_an_older_lab_is_narrowed(aws_clients):
    iam = aws_clients("iam")
    account = aws_clients("sts").get_caller_identity()["Account"]
    old = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
         "Resource": f"arn:aws:s3:::{LAB_BUCKET}/*"}]}
    args = dict(role_name=ROLE_NAME, account_id=account, bucket=LAB_BUCKET, external_id=EXTERNAL_ID)
    uc.ensure_uc_role(iam, **args, tags=LAB_TAGS)
    iam.put_role_policy(RoleName=ROLE_NAME, PolicyName=uc.UC_PERMISSIONS_POLICY_NAME, PolicyDocument=json.dumps(old))
    again = uc.ensure_uc_role(iam, **args, tags=LAB_TAGS)
    assert again["permissions_changed"] and f"read-only, bucket {LAB_BUCKET} only" in again["steps"][-1]
    stored = iam.get_role_policy(RoleName=ROLE_NAME, PolicyName=uc.UC_PERMISSIONS_POLICY_NAME)["PolicyDocument"]
    assert policies.s3_write_actions(stored) == []
    assert policies.canonical(stored) == policies.canonical(
        policies.uc_policies(**args, uc_master_role_arn=policies.UC_MASTER_ROLE_ARN)["permissions"])


def test_a_role_of_that_name_that_is_not_the_labs_is_never_changed(aws_clients):
    iam = aws_clients("iam")
    account = aws_clients("sts").get_caller_identity()["Account"]
    theirs = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(theirs), Tags=[{"Key": "team", "Value": "bi"}])
    args = dict(role_name=ROLE_NAME, account_id=account, bucket=LAB_BUCKET, external_id=EXTERNAL_ID, tags=LAB_TAGS)
    with pytest.raises(ownership.NotTheLabs) as err:
        uc.ensure_uc_role(iam, **args)
    assert str(err.value) == (
        f"IAM role {ROLE_NAME} already exists and is not this lab's (no tag project=kinesis-lab; its tags: team=bi): "
        "the lab will not tag, change or delete it. Choose another name with LAB_UC_ROLE_NAME and run this notebook "
        "again.")
    role = iam.get_role(RoleName=ROLE_NAME)["Role"]
    assert policies.canonical(role["AssumeRolePolicyDocument"]) == policies.canonical(theirs)
    assert iam.list_role_tags(RoleName=ROLE_NAME)["Tags"] == [{"Key": "team", "Value": "bi"}]
    assert iam.list_role_policies(RoleName=ROLE_NAME)["PolicyNames"] == []


def test_the_labs_role_with_a_policy_the_lab_did_not_put_is_refused(aws_clients):
    iam = aws_clients("iam")
    account = aws_clients("sts").get_caller_identity()["Account"]
    args = dict(role_name=ROLE_NAME, account_id=account, bucket=LAB_BUCKET, external_id=EXTERNAL_ID, tags=LAB_TAGS)
    uc.ensure_uc_role(iam, **args)
    iam.put_role_policy(RoleName=ROLE_NAME, PolicyName="write-everything", PolicyDocument=json.dumps(ALLOW_ALL))
    trust_before = iam.get_role(RoleName=ROLE_NAME)["Role"]["AssumeRolePolicyDocument"]
    with pytest.raises(ownership.NotTheLabs) as err:
        uc.ensure_uc_role(iam, **{**args, "external_id": "another-id"})
    assert str(err.value) == (
        f"IAM role {ROLE_NAME} carries policies the lab did not put there: inline policy write-everything. The lab's "
        "role may only carry kinesis-lab-uc-file-events, kinesis-lab-uc-s3-access: remove the others (aws iam "
        "delete-role-policy / detach-role-policy) or choose another name with LAB_UC_ROLE_NAME.")
    assert iam.get_role(RoleName=ROLE_NAME)["Role"]["AssumeRolePolicyDocument"] == trust_before  # unchanged


def test_the_role_arns_follow_the_partition():
    rendered = policies.uc_policies(account_id="123456789012", role_name=ROLE_NAME, bucket=LAB_BUCKET,
                                    external_id=EXTERNAL_ID, partition="aws-us-gov")
    assert f"arn:aws-us-gov:iam::123456789012:role/{ROLE_NAME}" in rendered["trust"]["Statement"][0]["Principal"]["AWS"]
    resources = json.dumps(rendered["permissions"])
    assert "arn:aws:" not in resources and f"arn:aws-us-gov:s3:::{LAB_BUCKET}/*" in resources


def test_enforcement_switch_really_refuses_unknown_keys(clean_stack):
    with iam_enforced(clean_stack.endpoint):
        assert (
            denied_code(lambda: boto3.client("s3", region_name=REGION).list_buckets()) == "InvalidAccessKeyId"
        )
    assert "Buckets" in boto3.client("s3", region_name=REGION).list_buckets()


def denied_code(call) -> str:
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return ""


def test_propagation_retry_waits_then_succeeds():
    err = ClientError(
        {"Error": {"Code": "MalformedPolicyDocument", "Message": "Invalid principal in policy"}},
        "UpdateAssumeRolePolicy",
    )
    attempts, slept = [], []

    def call():
        attempts.append(1)
        if len(attempts) < 3:
            raise err
        return "ok"

    assert uc._retry_while_propagating(call, delays=(1, 2, 4), sleep=slept.append) == "ok"
    assert slept == [1, 2]
    attempts.clear()
    with pytest.raises(ClientError):
        uc._retry_while_propagating(lambda: (_ for _ in ()).throw(err), delays=(1,), sleep=slept.append)
    other = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "UpdateAssumeRolePolicy")
    slept.clear()
    with pytest.raises(ClientError):
        uc._retry_while_propagating(lambda: (_ for _ in ()).throw(other), delays=(1,), sleep=slept.append)
    assert slept == []  # only the propagation error is retried


# --- Databricks workspace detection -------------------------------------------------------------------------
@pytest.fixture
def no_databricks_env(monkeypatch, tmp_path):
    for name in (
        "DATABRICKS_HOST",
        "DATABRICKS_TOKEN",
        "DATABRICKS_CONFIG_PROFILE",
        "DATABRICKS_AUTH_TYPE",
        "DATABRICKS_CLIENT_ID",
        "DATABRICKS_CLIENT_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "databrickscfg"))
    return tmp_path / "databrickscfg"


@pytest.fixture
def offline(monkeypatch):
    """Any network connection or Databricks SDK login attempt fails the test: what "at once, without
    network or prompts" means (how fast is not asserted: a loaded machine is slow at everything)."""
    import socket

    import databricks.sdk.core

    def refused(*args, **kwargs):
        raise AssertionError("tried to reach the network or to log in")

    monkeypatch.setattr(socket.socket, "connect", refused)
    monkeypatch.setattr(socket, "create_connection", refused)
    monkeypatch.setattr(databricks.sdk.core, "Config", refused)


def test_no_workspace_configured_is_false_at_once(no_databricks_env, offline):
    assert uc.databricks_workspace_configured() is False


def test_profile_without_host_or_with_browser_login_is_false(no_databricks_env, offline):
    no_databricks_env.write_text(
        "[DEFAULT]\ntoken = dapi123\n\n[browser]\nhost = https://example.invalid\n"
        "auth_type = external-browser\n"
    )
    assert uc.databricks_workspace_configured() is False
    assert uc.databricks_workspace_configured(profile="browser") is False  # would open a browser: refused


def test_workspace_with_host_and_token_is_true(no_databricks_env, monkeypatch):
    # a stand-in workspace on localhost: the SDK asks it for host metadata (404 -> falls back), no internet
    class NotFoundHandler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFoundHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("DATABRICKS_HOST", f"http://127.0.0.1:{server.server_address[1]}")
        assert uc.databricks_workspace_configured() is False  # a host alone is not a login
        monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-not-a-real-token")
        assert uc.databricks_workspace_configured() is True
    finally:
        server.shutdown()
        server.server_close()


# --- storage credential helpers (real SDK types, no workspace) ---------------------------------------------
def test_credential_fields_and_validation_rows():
    from databricks.sdk.service.catalog import (
        AwsIamRoleResponse,
        StorageCredentialInfo,
        ValidateStorageCredentialResponse,
        ValidationResult,
        ValidationResultOperation,
        ValidationResultResult,
    )

    info = StorageCredentialInfo(
        name="kinesis_lab_cred",
        aws_iam_role=AwsIamRoleResponse(
            role_arn="arn:aws:iam::123456789012:role/r",
            external_id=EXTERNAL_ID,
            unity_catalog_iam_arn="arn:aws:iam::414351767826:role/other-master",
        ),
    )
    assert uc.external_id_of(info) == EXTERNAL_ID
    assert uc.uc_master_role_arn_of(info) == "arn:aws:iam::414351767826:role/other-master"
    assert uc.uc_master_role_arn_of(StorageCredentialInfo(name="x")) == policies.UC_MASTER_ROLE_ARN
    with pytest.raises(ValueError, match="'x' has no AWS IAM role external id"):
        uc.external_id_of(StorageCredentialInfo(name="x"))

    response = ValidateStorageCredentialResponse(
        is_dir=True,
        results=[
            ValidationResult(operation=ValidationResultOperation.READ, result=ValidationResultResult.PASS),
            ValidationResult(
                operation=ValidationResultOperation.WRITE,
                result=ValidationResultResult.FAIL,
                message="AccessDenied",
            ),
        ],
    )
    assert uc.validation_rows(response) == [
        {"operation": "READ", "result": "PASS", "message": ""},
        {"operation": "WRITE", "result": "FAIL", "message": "AccessDenied"},
    ]
    assert uc.validation_rows(ValidateStorageCredentialResponse()) == []


class FakeAPI:
    """Records calls; ``get`` answers from ``items`` or raises the SDK's NotFound, like the workspace."""

    def __init__(self, items=None):
        self.items, self.calls = dict(items or {}), []

    def get(self, name):
        from databricks.sdk.errors import NotFound

        self.calls.append(("get", name, {}))
        if name not in self.items:
            raise NotFound(f"{name} does not exist")
        return self.items[name]

    def _store(self, op, name, kwargs, info):
        self.calls.append((op, name, kwargs))
        self.items[name] = info
        return info


class FakeCredentials(FakeAPI):
    def create(self, name, **kwargs):
        from databricks.sdk.service.catalog import AwsIamRoleResponse, StorageCredentialInfo

        role = AwsIamRoleResponse(role_arn=kwargs["aws_iam_role"].role_arn, external_id=EXTERNAL_ID)
        return self._store("create", name, kwargs, StorageCredentialInfo(
            name=name, aws_iam_role=role, read_only=kwargs.get("read_only")))

    def update(self, name, **kwargs):
        from databricks.sdk.service.catalog import AwsIamRoleResponse, StorageCredentialInfo

        role = AwsIamRoleResponse(role_arn=kwargs["aws_iam_role"].role_arn, external_id=EXTERNAL_ID)
        return self._store("update", name, kwargs, StorageCredentialInfo(
            name=name, aws_iam_role=role, read_only=kwargs.get("read_only")))

    trusted: set[str] = set()  # the external ids the role trusts; validation passes only for those

    def validate(self, **kwargs):
        from databricks.sdk.service.catalog import (
            ValidateStorageCredentialResponse,
            ValidationResult,
            ValidationResultOperation,
            ValidationResultResult,
        )

        self.calls.append(("validate", kwargs.get("storage_credential_name"), kwargs))
        info = self.items[kwargs["storage_credential_name"]]
        read = ValidationResultResult.PASS if info.aws_iam_role.external_id in self.trusted else ValidationResultResult.FAIL
        ops = [ValidationResultOperation.READ, ValidationResultOperation.LIST]
        if not kwargs.get("read_only"):  # what a read-only role answers to a read-write validation
            ops += [ValidationResultOperation.WRITE, ValidationResultOperation.DELETE]
        return ValidateStorageCredentialResponse(results=[
            ValidationResult(operation=op, result=read if op in ops[:2] else ValidationResultResult.FAIL)
            for op in ops])


class FakeLocations(FakeAPI):
    """Creation validates the credential first, as Unity Catalog does: PERMISSION_DENIED unless the role
    trusts the credential's external id."""

    def __init__(self, items=None, credentials: FakeCredentials | None = None):
        super().__init__(items)
        self.credentials = credentials

    def create(self, name, url, credential_name, **kwargs):
        from databricks.sdk.errors import PermissionDenied
        from databricks.sdk.service.catalog import ExternalLocationInfo

        self.calls.append(("try create", name, {}))
        info = self.credentials.items[credential_name]
        if info.aws_iam_role.external_id not in self.credentials.trusted:
            raise PermissionDenied(f"AWS IAM role does not have READ permissions on url {url}")
        return self._store("create", name, {"url": url, "credential_name": credential_name, **kwargs},
                           ExternalLocationInfo(name=name, url=url, credential_name=credential_name,
                                                read_only=kwargs.get("read_only")))

    def update(self, name, **kwargs):
        from databricks.sdk.service.catalog import ExternalLocationInfo

        old = self.items[name]
        return self._store("update", name, kwargs, ExternalLocationInfo(
            name=name, url=old.url, credential_name=old.credential_name, read_only=kwargs["read_only"]))


class FakeWorkspace:
    def __init__(self, credentials=None, locations=None):
        self.storage_credentials = FakeCredentials(credentials)
        self.external_locations = FakeLocations(locations, self.storage_credentials)


ROLE_ARN = f"arn:aws:iam::123456789012:role/{ROLE_NAME}"
URL = f"s3://{LAB_BUCKET}/"


def test_storage_credential_is_created_read_only_then_kept():
    w = FakeWorkspace()
    info, external_id = uc.create_storage_credential(w, "cred", ROLE_ARN)
    assert external_id == EXTERNAL_ID and info.read_only is True
    [(op, name, kwargs)] = [c for c in w.storage_credentials.calls if c[0] != "get"]
    assert (op, name, kwargs["read_only"], kwargs["skip_validation"]) == ("create", "cred", True, True)
    assert kwargs["aws_iam_role"].role_arn == ROLE_ARN
    w.storage_credentials.calls.clear()
    assert uc.create_storage_credential(w, "cred", ROLE_ARN)[0] is info  # read-only, same role: untouched
    assert [c[0] for c in w.storage_credentials.calls] == ["get"]


def test_existing_read_write_credential_is_made_read_only():
    from databricks.sdk.service.catalog import AwsIamRoleResponse, StorageCredentialInfo

    old = StorageCredentialInfo(name="cred", aws_iam_role=AwsIamRoleResponse(role_arn=ROLE_ARN, external_id="x"))
    w = FakeWorkspace(credentials={"cred": old})
    info, _ = uc.create_storage_credential(w, "cred", ROLE_ARN)
    [(op, _, kwargs)] = [c for c in w.storage_credentials.calls if c[0] != "get"]
    assert op == "update" and kwargs["read_only"] is True and info.read_only is True


def test_external_location_is_created_read_only_without_file_events():
    w = FakeWorkspace()
    uc.create_storage_credential(w, "cred", ROLE_ARN)
    w.storage_credentials.trusted = {EXTERNAL_ID}
    info, message = uc.ensure_external_location(w, "landing", URL, "cred")
    assert message == f"created read-only external location landing -> {URL}" and info.read_only is True
    [(op, name, kwargs)] = [c for c in w.external_locations.calls if c[0] == "create"]
    assert (op, name, kwargs["url"], kwargs["credential_name"]) == ("create", "landing", URL, "cred")
    assert kwargs["read_only"] is True and kwargs["enable_file_events"] is False
    assert uc.ensure_external_location(w, "landing", URL, "cred")[1] == (
        f"read-only external location landing already exists: {URL}")


def test_existing_read_write_location_is_made_read_only():
    from databricks.sdk.service.catalog import ExternalLocationInfo

    w = FakeWorkspace(locations={"landing": ExternalLocationInfo(name="landing", url=URL, credential_name="cred",
                                                                 read_only=False)})
    info, message = uc.ensure_external_location(w, "landing", URL, "cred")
    assert info.read_only is True and message == f"external location landing ({URL}) made read-only"
    assert [c for c in w.external_locations.calls if c[0] == "update"] == [
        ("update", "landing", {"read_only": True})]


def test_validation_asks_for_read_only_checks_and_passes_only_a_trusted_id():
    w = FakeWorkspace()
    uc.create_storage_credential(w, "cred", ROLE_ARN)
    w.storage_credentials.calls.clear()
    slept = []
    rows = uc.validate_storage_credential(w, "cred", URL, external_location_name="landing", sleep=slept.append)
    assert w.storage_credentials.calls[0] == ("validate", "cred", {
        "storage_credential_name": "cred", "url": URL, "read_only": True, "external_location_name": "landing"})
    assert rows == [{"operation": "READ", "result": "FAIL", "message": ""},
                    {"operation": "LIST", "result": "FAIL", "message": ""}]
    assert slept == list(uc.PROPAGATION_DELAYS)  # asked again after each delay, then gave up
    w.storage_credentials.trusted = {EXTERNAL_ID}
    assert uc.failed_read_checks(uc.validate_storage_credential(w, "cred", URL, sleep=slept.append)) == []


def test_sdk_accepts_the_read_only_arguments():
    # the installed SDK's signatures have the keywords the helpers pass
    import inspect

    from databricks.sdk.service.catalog import ExternalLocationsAPI, StorageCredentialsAPI

    for method, names in ((StorageCredentialsAPI.create, {"read_only", "skip_validation", "aws_iam_role"}),
                          (StorageCredentialsAPI.update, {"read_only", "skip_validation", "aws_iam_role"}),
                          (StorageCredentialsAPI.validate, {"read_only", "storage_credential_name", "url"}),
                          (ExternalLocationsAPI.create, {"read_only", "enable_file_events", "comment"}),
                          (ExternalLocationsAPI.update, {"read_only"})):
        assert names <= set(inspect.signature(method).parameters), method.__qualname__


# --- SQL templates -----------------------------------------------------------------------------------------
SQL_VALUES = {
    "01_catalog_and_schemas.sql": dict(catalog="kinesis_lab", managed_location="s3://managed-bucket/kinesis_lab/"),
    "02_external_location.sql": dict(
        location="kinesis_lab_landing",
        bucket=LAB_BUCKET,
        credential="kinesis_lab_cred",
        principal="account users",
    ),
    "03_explore_pipeline_tables.sql": dict(catalog="kinesis_lab"),
}


def test_every_sql_template_is_covered():
    assert {p.name for p in uc.SQL_DIR.glob("*.sql*")} == set(SQL_VALUES)


@pytest.mark.parametrize("name", sorted(SQL_VALUES))
def test_sql_templates_render_completely(name):
    sql = uc.render_sql(name.removesuffix(".sql"), **SQL_VALUES[name])
    assert "${" not in sql
    statements = uc.sql_statements(sql)
    assert statements and not any(
        line.lstrip().startswith("--") for s in statements for line in s.splitlines()
    )


def test_catalog_sql_creates_catalog_and_three_schemas():
    statements = uc.sql_statements(uc.render_sql("01_catalog_and_schemas", catalog="kinesis_lab", managed_location=None))
    creates = [s.split("\n")[0] for s in statements if s.startswith("CREATE")]
    assert creates == [
        "CREATE CATALOG IF NOT EXISTS `kinesis_lab`",
        "CREATE SCHEMA IF NOT EXISTS `kinesis_lab`.`bronze`",
        "CREATE SCHEMA IF NOT EXISTS `kinesis_lab`.`silver`",
        "CREATE SCHEMA IF NOT EXISTS `kinesis_lab`.`gold`",
    ]
    assert "MANAGED LOCATION" not in statements[0]
    assert statements[0].splitlines()[1].strip() == "COMMENT 'Kinesis -> Firehose -> S3 -> Databricks course'"


def test_catalog_sql_with_a_managed_location():
    # a metastore without a storage root (workspaces enabled for UC automatically) needs it
    statements = uc.sql_statements(uc.render_sql("01_catalog_and_schemas", **SQL_VALUES["01_catalog_and_schemas.sql"]))
    assert [line.strip() for line in statements[0].splitlines()] == [
        "CREATE CATALOG IF NOT EXISTS `kinesis_lab`",
        "MANAGED LOCATION 's3://managed-bucket/kinesis_lab/'",
        "COMMENT 'Kinesis -> Firehose -> S3 -> Databricks course'",
    ]
    with pytest.raises(uc.SqlTemplateError, match="needs a value for: managed_location"):
        uc.render_sql("01_catalog_and_schemas", catalog="kinesis_lab")  # None must be said, not forgotten


def test_external_location_sql():
    statements = uc.sql_statements(
        uc.render_sql("02_external_location", **SQL_VALUES["02_external_location.sql"])
    )
    assert statements[0].split() == [
        "CREATE",
        "EXTERNAL",
        "LOCATION",
        "IF",
        "NOT",
        "EXISTS",
        "`kinesis_lab_landing`",
        "URL",
        f"'s3://{LAB_BUCKET}/'",
        "WITH",
        "(STORAGE",
        "CREDENTIAL",
        "`kinesis_lab_cred`)",
        "COMMENT",
        "'Firehose",
        "landing",
        "bucket",
        "of",
        "the",
        "kinesis",
        "lab'",
    ]
    assert "GRANT READ FILES ON EXTERNAL LOCATION `kinesis_lab_landing` TO `account users`" in statements
    assert not any("WRITE" in s.upper() for s in statements)  # read-only: no WRITE FILES grant
    assert statements[-1] == f"LIST 's3://{LAB_BUCKET}/bronze/' LIMIT 20"  # the only LIST: comments dropped


def test_sql_missing_value_and_unsafe_value():
    with pytest.raises(uc.SqlTemplateError) as err:
        uc.render_sql("02_external_location", bucket="b", credential="c")
    assert str(err.value) == (
        "SQL template '02_external_location' needs a value for: location, principal "
        "(pass location=..., principal=...)"
    )
    with pytest.raises(uc.SqlTemplateError, match="contains a quote"):
        uc.render_sql("01_catalog_and_schemas", catalog="x`; DROP CATALOG main; --", managed_location=None)
    with pytest.raises(uc.SqlTemplateError, match=r"no SQL template 'nope'.*01_catalog_and_schemas.sql"):
        uc.render_sql("nope")


def test_sql_statements_keeps_double_dashes_inside_values():
    sql = "-- a comment\nLIST 's3://my--bucket/' LIMIT 1;\n  -- another\nSELECT 1;"
    assert uc.sql_statements(sql) == ["LIST 's3://my--bucket/' LIMIT 1", "SELECT 1"]


def test_validation_is_asked_again_while_the_trust_policy_propagates():
    from databricks.sdk.service.catalog import (
        ValidateStorageCredentialResponse,
        ValidationResult,
        ValidationResultOperation,
        ValidationResultResult,
    )

    def response(read: str):
        return ValidateStorageCredentialResponse(results=[
            ValidationResult(operation=ValidationResultOperation.READ, result=ValidationResultResult(read)),
            ValidationResult(operation=ValidationResultOperation.LIST, result=ValidationResultResult.PASS)])

    class Credentials:
        answers = [response("FAIL"), response("FAIL"), response("PASS")]

        def validate(self, **kwargs):
            return self.answers.pop(0)

    class Workspace:
        storage_credentials = Credentials()

    slept = []
    rows = uc.validate_storage_credential(Workspace(), "cred", URL, delays=(2, 4, 8), sleep=slept.append)
    assert slept == [2, 4] and uc.failed_read_checks(rows) == []
    Credentials.answers = [response("FAIL")] * 3
    rows = uc.validate_storage_credential(Workspace(), "cred", URL, delays=(2, 4), sleep=slept.append)
    assert uc.failed_read_checks(rows) == ["READ"] and slept == [2, 4, 2, 4]  # gives up after the last delay
    assert uc.failed_read_checks([]) == ["READ", "LIST"]  # no answer is no proof


# --- the helpers through the real SDK, against the Unity Catalog API stand-in (HTTP on 127.0.0.1) ---------
@pytest.fixture
def uc_api(no_databricks_env, monkeypatch):
    from databricks_standins import UnityCatalogAPI

    with UnityCatalogAPI(token="dapi-test-token") as api:
        monkeypatch.setenv("DATABRICKS_HOST", api.url)
        monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-test-token")
        from databricks.sdk import WorkspaceClient

        yield api, WorkspaceClient()


def test_existing_credential_and_location_are_updated_read_only_over_http(uc_api):
    from databricks_standins import EXTERNAL_ID

    api, w = uc_api
    api.credentials["cred"] = {"name": "cred", "read_only": False,
                               "aws_iam_role": {"role_arn": "arn:aws:iam::123456789012:role/old", "external_id": "x"}}
    api.locations["landing"] = {"name": "landing", "url": URL, "credential_name": "cred", "read_only": False}
    info, external_id = uc.create_storage_credential(w, "cred", ROLE_ARN)
    assert info.read_only is True and info.aws_iam_role.role_arn == ROLE_ARN and external_id == "x"
    info, message = uc.ensure_external_location(w, "landing", URL, "cred")
    assert info.read_only is True and message == f"external location landing ({URL}) made read-only"
    prefix = "/api/2.1/unity-catalog"
    assert api.api_requests() == [
        ("GET", f"{prefix}/storage-credentials/cred", None),
        ("PATCH", f"{prefix}/storage-credentials/cred",
         {"aws_iam_role": {"role_arn": ROLE_ARN}, "read_only": True, "skip_validation": True}),
        ("GET", f"{prefix}/external-locations/landing", None),
        ("PATCH", f"{prefix}/external-locations/landing", {"read_only": True}),
    ]
    assert api.problems == [] and EXTERNAL_ID != external_id  # an existing credential keeps its external id


def test_the_api_stand_in_refuses_what_the_api_does_not_take(uc_api):
    from databricks.sdk.errors import DatabricksError
    from databricks.sdk.service.catalog import AwsIamRoleRequest

    api, w = uc_api
    with pytest.raises(DatabricksError):
        w.api_client.do("POST", "/api/2.1/unity-catalog/storage-credentials", body={
            "name": "cred", "aws_iam_role": {"role_arn": ROLE_ARN, "external_id": "mine"}, "readonly": "yes"})
    with pytest.raises(DatabricksError):
        w.external_locations.create("landing", URL, "no-such-credential", read_only=True)
    assert api.problems == ["create storage credential.aws_iam_role: unknown field 'external_id'",
                            "create storage credential: unknown field 'readonly'"]
    with pytest.raises(DatabricksError, match="bad request"):
        w.storage_credentials.create("cred", aws_iam_role=AwsIamRoleRequest(role_arn=ROLE_ARN), read_only="yes")
    assert api.problems[-1] == "create storage credential.read_only: str, expected bool"
    assert api.credentials == {}  # nothing refused was stored
