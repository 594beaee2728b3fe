"""Unity Catalog access to the lab bucket: the IAM role behind a storage credential, the credential
itself (Databricks SDK) and the SQL templates in ``databricks/sql/``.

The order on real AWS + Databricks (notebook 06):
1. ``ensure_uc_role`` with a placeholder external id: creates the role trusting only the UC master
   role, then adds the role itself (self-assume) once it exists.
2. ``create_storage_credential``: Databricks answers with the credential's external id.
3. ``ensure_uc_role`` again with that external id: only the trust policy changes (shown as a diff).
4. ``ensure_external_location`` (Unity Catalog validates the credential before it creates a location: retried
   while the trust update propagates), ``validate_storage_credential`` and the SQL in ``databricks/sql/``.
Steps 2-4 are ``uc_access_from_machine``. Inside Databricks (no AWS credentials) the role's trust policy is
updated on the learner's machine between two runs: ``kinesis_lab.course.databricks_runtime.uc_access_in_workspace``.

The pipeline only reads the landing bucket, so everything is read-only: the role may only get and list
(``aws-policy/uc-permissions-policy.json``), and the credential and external location are created with
``read_only=True`` (Unity Catalog then refuses writes through them before they reach AWS).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import string
import time
from pathlib import Path
from typing import Any

from kinesis_lab.cloud import ownership, policies
from kinesis_lab.cloud.aws import error_code
from kinesis_lab.cloud.config import find_home

SQL_DIR = find_home() / "databricks" / "sql"
UC_PERMISSIONS_POLICY_NAME = policies.UC_PERMISSIONS_POLICY_NAME
# the inline policies a lab UC role may carry (the file-events one is optional)
UC_LAB_POLICIES = {policies.UC_PERMISSIONS_POLICY_NAME, policies.UC_FILE_EVENTS_POLICY_NAME}
# what the trust policy carries before Databricks has issued the credential's external id
PLACEHOLDER_EXTERNAL_ID = "0000"
PROPAGATION_DELAYS = (2, 4, 8, 16)  # seconds; a new role can take a few seconds to be usable as a principal


class SqlTemplateError(ValueError):
    """A SQL template is missing, or a value is missing or unsafe; the message says which."""


# --- the IAM role ----------------------------------------------------------------------------------------
def _retry_while_propagating(call, delays=PROPAGATION_DELAYS, sleep=time.sleep):
    """Run ``call``; retry on MalformedPolicyDocument, which AWS returns while a just-created role is not
    yet accepted as a principal."""
    for delay in (*delays, None):
        try:
            return call()
        except Exception as exc:
            if error_code(exc) != "MalformedPolicyDocument" or delay is None:
                raise
            sleep(delay)


def _put_permissions(iam, role_name: str, permissions: dict, bucket: str, steps: list[str]) -> bool:
    """Write the role's inline policy unless it is already ``permissions``; True if it was written."""
    try:
        current = iam.get_role_policy(RoleName=role_name, PolicyName=UC_PERMISSIONS_POLICY_NAME)["PolicyDocument"]
        changed = policies.canonical(current) != policies.canonical(permissions)
    except Exception as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        changed = True
    if changed:
        iam.put_role_policy(RoleName=role_name, PolicyName=UC_PERMISSIONS_POLICY_NAME,
                            PolicyDocument=json.dumps(permissions))
        steps.append(f"inline policy {UC_PERMISSIONS_POLICY_NAME} written (read-only, bucket {bucket} only)")
    else:
        steps.append(f"inline policy {UC_PERMISSIONS_POLICY_NAME} already up to date")
    return changed


def ensure_uc_role(
    iam,
    *,
    role_name: str,
    account_id: str,
    bucket: str,
    external_id: str,
    tags: dict[str, str],
    uc_master_role_arn: str = policies.UC_MASTER_ROLE_ARN,
    partition: str = "aws",
    sleep=time.sleep,
) -> dict:
    """Create or update the role Unity Catalog assumes to reach ``bucket``. Idempotent.

    A role of that name must be the lab's (the project tag of ``tags``, put on it at creation) and carry no
    policy but the lab's, else ``ownership.NotTheLabs`` is raised before anything is changed; an existing role
    is never re-tagged.

    Returns ``{"role_arn", "created", "trust_changed", "permissions_changed", "old_trust", "new_trust",
    "steps"}``; ``policies.policy_diff(result["old_trust"], result["new_trust"])`` shows the change."""
    rendered = policies.uc_policies(
        account_id=account_id,
        role_name=role_name,
        bucket=bucket,
        external_id=external_id,
        uc_master_role_arn=uc_master_role_arn,
        partition=partition,
    )
    role_arn = policies.role_arn(account_id, role_name, partition)
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    steps: list[str] = []
    if ownership.require_ours(iam, "uc_role", role_name, tags):
        ownership.require_only_lab_policies(iam, "uc_role", role_name, UC_LAB_POLICIES)

    # 1. the role must exist before its trust policy can name it: create it trusting the UC master role only
    try:
        iam.create_role(
            RoleName=role_name,
            AssumeRolePolicyDocument=json.dumps(rendered["bootstrap_trust"]),
            Description="Unity Catalog storage credential for the kinesis lab bucket",
            Tags=tag_list,
        )
        created = True
        old_trust = rendered["bootstrap_trust"]
        steps.append("created the role; its trust policy names only the UC master role")
    except Exception as exc:
        if error_code(exc) != "EntityAlreadyExists":
            raise
        created = False
        old_trust = policies.canonical(iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"])
        steps.append("the role already exists and is the lab's")

    # 2. the final trust policy: the UC master role and the role itself, both with the external id
    trust_changed = policies.canonical(old_trust) != policies.canonical(rendered["trust"])
    if trust_changed:
        _retry_while_propagating(
            lambda: iam.update_assume_role_policy(
                RoleName=role_name, PolicyDocument=json.dumps(rendered["trust"])
            ),
            sleep=sleep,
        )
        steps.append(f"trust policy updated: UC master role + the role itself, external id {external_id}")
    else:
        steps.append("trust policy already up to date")

    # 3. what the role may do: read the lab bucket only, and assume itself
    permissions_changed = _put_permissions(iam, role_name, rendered["permissions"], bucket, steps)
    return {
        "role_arn": role_arn,
        "created": created,
        "trust_changed": trust_changed,
        "permissions_changed": permissions_changed,
        "old_trust": old_trust,
        "new_trust": rendered["trust"],
        "steps": steps,
    }


# --- Databricks workspace --------------------------------------------------------------------------------
def _profile_section(profile: str | None) -> dict[str, str]:
    """The profile's keys from ~/.databrickscfg (or DATABRICKS_CONFIG_FILE); {} if there is none."""
    path = Path(os.environ.get("DATABRICKS_CONFIG_FILE") or "~/.databrickscfg").expanduser()
    if not path.is_file():
        return {}
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error:
        return {}
    name = profile or os.environ.get("DATABRICKS_CONFIG_PROFILE") or "DEFAULT"
    if name == "DEFAULT":
        return dict(parser.defaults())
    return dict(parser[name]) if parser.has_section(name) else {}


def databricks_workspace_configured(profile: str | None = None) -> bool:
    """True when the Databricks SDK can authenticate to a workspace (env DATABRICKS_HOST + credentials, or a
    profile). Nothing configured: False at once, without network or prompts."""
    section = _profile_section(profile)
    host = os.environ.get("DATABRICKS_HOST") or section.get("host")
    if not host:
        return False
    auth_type = os.environ.get("DATABRICKS_AUTH_TYPE") or section.get("auth_type")
    if auth_type == "external-browser":
        return False  # would open a browser and wait: log in with the Databricks CLI first
    from databricks.sdk.core import Config

    try:
        # short timeouts: an unreachable host must not block the notebook
        Config(profile=profile, http_timeout_seconds=10, retry_timeout_seconds=20)
    except Exception:
        return False
    return True


def external_id_of(info) -> str:
    """The external id Databricks issued for an AWS storage credential (goes into the role's trust policy)."""
    role = getattr(info, "aws_iam_role", None)
    if role is None or not role.external_id:
        raise ValueError(f"storage credential {getattr(info, 'name', '?')!r} has no AWS IAM role external id")
    return role.external_id


def uc_master_role_arn_of(info) -> str:
    """The UC master role this workspace uses (falls back to the commercial-AWS one)."""
    role = getattr(info, "aws_iam_role", None)
    return (role.unity_catalog_iam_arn if role is not None else None) or policies.UC_MASTER_ROLE_ARN


def ensure_storage_credential(w, name: str, role_arn: str):
    """Get or create the read-only storage credential ``name`` for ``role_arn``; one that exists with
    another role or not read-only is updated. Returns ``(info, external_id, created)``. Created with
    ``skip_validation``: the role cannot trust the external id before Databricks issues it."""
    from databricks.sdk.errors import NotFound
    from databricks.sdk.service.catalog import AwsIamRoleRequest

    try:
        info = w.storage_credentials.get(name)
        created = False
        if info.aws_iam_role is None or info.aws_iam_role.role_arn != role_arn or not info.read_only:
            info = w.storage_credentials.update(
                name, aws_iam_role=AwsIamRoleRequest(role_arn=role_arn), read_only=True, skip_validation=True
            )
    except NotFound:
        info = w.storage_credentials.create(
            name,
            aws_iam_role=AwsIamRoleRequest(role_arn=role_arn),
            comment="kinesis lab: Firehose landing bucket (read-only)",
            read_only=True,
            skip_validation=True,
        )
        created = True
    return info, external_id_of(info), created


def create_storage_credential(w, name: str, role_arn: str):
    """``ensure_storage_credential`` without the ``created`` flag: ``(info, external_id)``."""
    info, external_id, _ = ensure_storage_credential(w, name, role_arn)
    return info, external_id


class LocationMismatch(ValueError):
    """An external location of that name exists on another URL or with another credential."""


class TrustNotUpdated(RuntimeError):
    """Unity Catalog cannot read the bucket with the credential: the role does not trust its external id yet."""


def trust_step(role_arn: str, external_id: str) -> str:
    """The exact commands (from the repository root, with AWS credentials that may change IAM) that make the
    role trust ``external_id``."""
    role_name = role_arn.rsplit("/", 1)[-1]
    return (f"  python -m kinesis_lab.cloud.policies uc trust --external-id {external_id} > build/uc-trust.json\n"
            f"  aws iam update-assume-role-policy --role-name {role_name} "
            "--policy-document file://build/uc-trust.json")


def _same_url(a: str | None, b: str) -> bool:
    return (a or "").rstrip("/") == b.rstrip("/")


def _create_location(w, name, url, credential_name, delays, sleep):
    """Create the location; Unity Catalog validates the credential on ``url`` first and answers
    PERMISSION_DENIED while the role does not (yet) trust it: asked again after each of ``delays``."""
    from databricks.sdk.errors import PermissionDenied

    for delay in (*delays, None):
        try:
            return w.external_locations.create(
                name,
                url,
                credential_name,
                comment="kinesis lab: Firehose landing bucket (read-only)",
                read_only=True,
                enable_file_events=False,
            )
        except PermissionDenied as exc:
            if delay is None:
                raise TrustNotUpdated(
                    f"Unity Catalog could not read {url} with the storage credential {credential_name} ({exc}): "
                    "the UC role must trust the credential's external id (and may need a minute after that); "
                    "update its trust policy, then run this cell again"
                ) from exc
            sleep(delay)


def ensure_external_location(w, name: str, url: str, credential_name: str, delays=PROPAGATION_DELAYS,
                             sleep=time.sleep):
    """Get or create the read-only external location ``name`` on ``url``; one that exists but is not
    read-only is made read-only; one on another URL or with another credential raises ``LocationMismatch``
    (nothing is changed). Creation validates the credential (retried while a trust update propagates).
    File events stay off: the pipeline lists the bucket, and the role has no SNS/SQS permissions
    (``aws-policy/uc-file-events-policy.json`` is the opt-in). Returns ``(info, message)``."""
    from databricks.sdk.errors import NotFound

    try:
        info = w.external_locations.get(name)
    except NotFound:
        info = _create_location(w, name, url, credential_name, delays, sleep)
        return info, f"created read-only external location {name} -> {url}"
    if not _same_url(info.url, url) or info.credential_name != credential_name:
        raise LocationMismatch(
            f"external location {name} already exists on {info.url} with credential {info.credential_name}, "
            f"not on {url} with {credential_name}: the lab will not change it. Drop it (DROP EXTERNAL LOCATION "
            f"`{name}`) if it is the lab's, or choose another name with location_name, then run again"
        )
    if not info.read_only:
        info = w.external_locations.update(name, read_only=True)
        return info, f"external location {name} ({info.url}) made read-only"
    return info, f"read-only external location {name} already exists: {info.url}"


def validation_rows(response) -> list[dict]:
    """A ``ValidateStorageCredentialResponse`` as table rows: operation, result, message."""
    return [
        {
            "operation": r.operation.value if r.operation else None,
            "result": r.result.value if r.result else None,
            "message": r.message or "",
        }
        for r in (response.results or [])
    ]


READ_CHECKS = ("READ", "LIST")  # what a read-only credential must pass


def failed_read_checks(rows: list[dict]) -> list[str]:
    """The read checks (READ, LIST) that did not pass in ``validation_rows``."""
    passed = {row["operation"] for row in rows if row["result"] == "PASS"}
    return [operation for operation in READ_CHECKS if operation not in passed]


def validate_storage_credential(w, name: str, url: str, external_location_name: str | None = None,
                                delays=PROPAGATION_DELAYS, sleep=time.sleep) -> list[dict]:
    """Ask Unity Catalog to read and list at ``url`` with the credential (``read_only``: no write or delete
    test, which the read-only role would fail); one row per operation. ``external_location_name`` names the
    location being checked (where locations overlap, the one meant). Asked again after each of ``delays``
    while a read check fails: a trust policy just updated takes a few seconds to apply."""
    extra = {"external_location_name": external_location_name} if external_location_name else {}
    for delay in (*delays, None):
        rows = validation_rows(w.storage_credentials.validate(
            storage_credential_name=name, url=url, read_only=True, **extra))
        if not failed_read_checks(rows) or delay is None:
            return rows
        sleep(delay)


def location_and_validation(w, *, credential_name: str, location_name: str, url: str, sleep=time.sleep) -> dict:
    """The external location (created with validation, retried while a trust update propagates), then the
    credential validated on it: ``{"message", "validation"}``; a failed read check raises ``TrustNotUpdated``."""
    _, message = ensure_external_location(w, location_name, url, credential_name, sleep=sleep)
    rows = validate_storage_credential(w, credential_name, url, external_location_name=location_name, sleep=sleep)
    failed = failed_read_checks(rows)
    if failed:
        raise TrustNotUpdated(f"the storage credential {credential_name} cannot {' or '.join(failed)} {url}: the UC "
                              "role must trust its external id; update the trust policy, then run this cell again")
    return {"message": message, "validation": rows}


def uc_access_from_machine(w, iam, *, credential_name: str, location_name: str, url: str, role_name: str,
                           account_id: str, bucket: str, tags: dict[str, str], partition: str = "aws",
                           sleep=time.sleep) -> dict:
    """With AWS credentials and a workspace login (the learner's machine): the credential, the role trusting
    its external id, then the location and its validation. Returns what ``location_and_validation`` does,
    plus ``"role"`` (``ensure_uc_role``'s answer)."""
    role_arn = policies.role_arn(account_id, role_name, partition)
    info, external_id, _ = ensure_storage_credential(w, credential_name, role_arn)
    role = ensure_uc_role(iam, role_name=role_name, account_id=account_id, bucket=bucket, external_id=external_id,
                          tags=tags, uc_master_role_arn=uc_master_role_arn_of(info), partition=partition, sleep=sleep)
    return {"role": role, **location_and_validation(w, credential_name=credential_name, location_name=location_name,
                                                    url=url, sleep=sleep)}


# --- SQL templates ---------------------------------------------------------------------------------------
def sql_template_path(template_name: str) -> Path:
    """``databricks/sql/<name>``; ``.sql`` / ``.sql.tmpl`` may be left off."""
    for candidate in (template_name, f"{template_name}.sql", f"{template_name}.sql.tmpl"):
        path = SQL_DIR / candidate
        if path.is_file():
            return path
    known = ", ".join(sorted(p.name for p in SQL_DIR.glob("*.sql*")))
    raise SqlTemplateError(f"no SQL template {template_name!r} in {SQL_DIR} (known: {known})")


def render_sql(template_name: str, **values: Any) -> str:
    """Fill ``${...}`` in a SQL template. A value given as ``None`` leaves out every line that holds it (an
    optional clause, e.g. ``MANAGED LOCATION``). A missing value, or one that could break out of its quotes
    or backticks, raises ``SqlTemplateError``."""
    text = sql_template_path(template_name).read_text()
    missing = sorted(set(string.Template(text).get_identifiers()) - set(values))
    if missing:
        raise SqlTemplateError(
            f"SQL template {template_name!r} needs a value for: {', '.join(missing)} "
            f"(pass {', '.join(f'{m}=...' for m in missing)})"
        )
    for key, value in values.items():
        if value is None:
            text = "".join(line for line in text.splitlines(keepends=True) if f"${{{key}}}" not in line)
        elif re.search(r"[`'\";\\\n]", str(value)):
            raise SqlTemplateError(
                f"value for {key!r} contains a quote, backtick, semicolon or newline: {value!r}"
            )
    return string.Template(text).substitute({k: str(v) for k, v in values.items() if v is not None})


def sql_statements(sql: str) -> list[str]:
    """Split rendered SQL into statements (for ``spark.sql`` or the statement API, one at a time). Drops
    whole-line ``--`` comments; the lab's templates have no ``;`` inside strings."""
    code = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in code.split(";") if s.strip()]
