"""The lab's IAM policies: JSON templates in ``aws-policy/`` filled with ``${placeholders}``.

``render_policy`` fills one template; ``firehose_policies`` / ``uc_policies`` fill the sets a role needs;
``learner_policy`` is for the learner's own IAM user or role; ``bucket_tls_policy`` merges the lab's
deny-without-TLS statement into a bucket policy; ``policy_diff`` shows what changes between two versions;
``lint_policy`` runs parliament (an IAM linter); ``s3_write_actions`` lists what a policy allows on S3 beyond
reading (the UC role: nothing). Every ARN uses ``${partition}`` (``aws``, ``aws-cn``, ``aws-us-gov``), taken
from the caller's ARN.
"""

from __future__ import annotations

import difflib
import json
import re
import string
from pathlib import Path
from typing import Any

from kinesis_lab.cloud.config import find_home

POLICY_DIR = find_home() / "aws-policy"

# Databricks' Unity Catalog master role (AWS commercial regions); it assumes the storage-credential role
UC_MASTER_ROLE_ARN = "arn:aws:iam::414351767826:role/unity-catalog-prod-UCMasterRole-14S5ZJVKOTYTL"

# the log stream Firehose writes delivery errors to; the delivery-stream request must use the same name
FIREHOSE_LOG_STREAM = "DestinationDelivery"

FIREHOSE_TEMPLATES = {"trust": "firehose-trust-policy", "permissions": "firehose-permissions-policy"}
UC_TEMPLATES = {"trust": "uc-trust-policy", "permissions": "uc-permissions-policy"}
UC_FILE_EVENTS_TEMPLATE = "uc-file-events-policy"
BUCKET_TLS_TEMPLATE = "bucket-tls-policy"
LEARNER_TEMPLATE = "learner-policy"

# the inline policies the lab puts on its roles: a lab role carrying any other policy is refused
FIREHOSE_POLICY_NAME = "firehose-delivery-least-privilege"
UC_PERMISSIONS_POLICY_NAME = "kinesis-lab-uc-s3-access"
UC_FILE_EVENTS_POLICY_NAME = "kinesis-lab-uc-file-events"  # optional (aws-policy/README.md)


class PolicyTemplateError(ValueError):
    """A template is missing, or a placeholder has no value; the message names what to pass."""


def template_path(name: str) -> Path:
    """``aws-policy/<name>.json`` (the ``.json`` suffix is optional in ``name``)."""
    file_name = name if name.endswith(".json") else f"{name}.json"
    path = POLICY_DIR / file_name
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in POLICY_DIR.glob("*.json")))
        raise PolicyTemplateError(f"no policy template {file_name!r} in {POLICY_DIR} (known: {known})")
    return path


def placeholders(name: str) -> set[str]:
    """The ``${...}`` names a template needs."""
    return set(string.Template(template_path(name).read_text()).get_identifiers())


def render_policy(name: str, **values: Any) -> dict:
    """Fill template ``name`` with ``values`` and parse it. Extra values are ignored, so one dict of
    settings can fill every template; a missing one raises ``PolicyTemplateError``."""
    text = template_path(name).read_text()
    missing = sorted(placeholders(name) - set(values))
    if missing:
        raise PolicyTemplateError(
            f"policy template {name!r} needs a value for: {', '.join(missing)} "
            f"(pass {', '.join(f'{m}=...' for m in missing)})"
        )
    for key, value in values.items():
        # a quote or backslash would change the JSON's structure, not just a string in it
        if isinstance(value, str) and re.search(r'["\\\n]', value):
            raise PolicyTemplateError(
                f"value for {key!r} must not contain quotes, backslashes or newlines: {value!r}"
            )
    filled = string.Template(text).substitute({k: str(v) for k, v in values.items()})
    return json.loads(filled)


def _session_values(session, *names: str) -> dict[str, Any]:
    """What a ``LabSession`` fills in every template (partition, account, region, bucket), plus the named
    settings of its configuration. Nothing without a session."""
    if session is None:
        return {}
    values = {"partition": session.partition, "account_id": session.account_id, "region": session.cfg.region,
              "bucket": session.bucket}
    values.update({name: getattr(session.cfg, name) for name in names})
    return values


def firehose_values(session=None, **values: Any) -> dict:
    """Placeholder values for the Firehose role, from a ``LabSession`` (``targets.connect``) and/or keywords
    (keywords win): partition, account_id, region, bucket, stream_name, log_group, log_stream."""
    filled: dict[str, Any] = {"log_stream": FIREHOSE_LOG_STREAM, "partition": "aws"}
    filled.update(_session_values(session, "stream_name", "log_group"))
    filled.update(values)
    return filled


def firehose_policies(session=None, **values: Any) -> dict[str, dict]:
    """``{"trust": ..., "permissions": ...}`` for the role Firehose assumes to read Kinesis and write S3."""
    filled = firehose_values(session, **values)
    return {kind: render_policy(name, **filled) for kind, name in FIREHOSE_TEMPLATES.items()}


def uc_values(session=None, *, external_id: str | None = None, **values: Any) -> dict:
    """Placeholder values for the Unity Catalog role: account_id, role_name, bucket, region, external_id,
    uc_master_role_arn (default: Databricks' commercial-AWS UC master role), partition."""
    filled: dict[str, Any] = {"uc_master_role_arn": UC_MASTER_ROLE_ARN, "partition": "aws"}
    filled.update(_session_values(session))
    if session is not None:
        filled["role_name"] = session.cfg.uc_role_name
    if external_id is not None:
        filled["external_id"] = external_id
    filled.update(values)
    return filled


def uc_policies(
    session=None, *, external_id: str | None = None, file_events: bool = False, **values: Any
) -> dict[str, dict]:
    """``{"trust", "bootstrap_trust", "permissions"}`` (+ ``"file_events"`` if asked) for the role behind the
    Unity Catalog storage credential. ``permissions`` is read-only on the bucket (the pipeline only reads
    it). ``bootstrap_trust`` names only the UC master role: AWS rejects a trust policy naming a role that
    does not exist yet, so the role is created with it first."""
    filled = uc_values(session, external_id=external_id, **values)
    out = {kind: render_policy(name, **filled) for kind, name in UC_TEMPLATES.items()}
    out["bootstrap_trust"] = without_principal(
        out["trust"], role_arn(filled["account_id"], filled["role_name"], filled["partition"])
    )
    if file_events:
        out["file_events"] = render_policy(UC_FILE_EVENTS_TEMPLATE, **filled)
    return out


def role_arn(account_id: str, role_name: str, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account_id}:role/{role_name}"


def learner_values(session=None, **values: Any) -> dict:
    """Placeholder values for the learner's own policy: the lab's names, the account, region and partition,
    and the fixed start of the Firehose prefix and error prefix (the only places the learner may delete)."""
    from kinesis_lab.cloud.prefixes import static_prefix

    filled: dict[str, Any] = {"partition": "aws"}
    filled.update(_session_values(session, "stream_name", "delivery_stream_name", "firehose_role_name",
                                  "uc_role_name", "log_group"))
    if session is not None:
        filled.update(landing_prefix=static_prefix(session.cfg.s3_prefix),
                      error_prefix=static_prefix(session.cfg.error_prefix))
    filled.update(values)
    return filled


def learner_policy(session=None, **values: Any) -> dict:
    """The policy for the learner's IAM user or role: only what notebooks 01-06 and 99 call, on the lab's
    names only; ``iam:PassRole`` only for the Firehose role, only to Firehose."""
    return render_policy(LEARNER_TEMPLATE, **learner_values(session, **values))


def bucket_tls_policy(current: dict | str | None, *, bucket: str, partition: str = "aws") -> dict:
    """``current`` bucket policy (None: there is none) with the lab's statement denying requests without
    TLS added or brought up to date; every other statement is kept as it is. Idempotent."""
    lab = render_policy(BUCKET_TLS_TEMPLATE, bucket=bucket, partition=partition)
    [statement] = lab["Statement"]
    policy = json.loads(current) if isinstance(current, str) else json.loads(json.dumps(current or lab))
    kept = [s for s in _statements(policy) if s.get("Sid") != statement["Sid"]]
    return {**policy, "Version": policy.get("Version", lab["Version"]), "Statement": [*kept, statement]}


def without_principal(policy: dict, principal_arn: str) -> dict:
    """A copy of a trust policy with one AWS principal removed from every statement."""
    copy = json.loads(json.dumps(policy))
    for statement in copy["Statement"]:
        aws = statement.get("Principal", {}).get("AWS")
        if isinstance(aws, list):
            kept = [p for p in aws if p != principal_arn]
            statement["Principal"]["AWS"] = kept[0] if len(kept) == 1 else kept
    return copy


def canonical(policy: dict | str) -> dict:
    """A policy in a comparable form: IAM may return it as a JSON string, turn a one-item list of strings
    into a string and reorder lists; none of that changes its meaning."""
    if isinstance(policy, str):
        policy = json.loads(policy)

    def norm(node):
        if isinstance(node, dict):
            return {k: norm(v) for k, v in node.items()}
        if isinstance(node, list):
            items = [norm(v) for v in node]
            if len(items) == 1 and isinstance(items[0], str):
                return items[0]  # ["x"] and "x" mean the same for actions, resources and principals
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
        return node

    return norm(policy)


def policy_diff(old: dict | None, new: dict, old_label: str = "before", new_label: str = "after") -> str:
    """A unified diff of the two policies as sorted, indented JSON; ``""`` when they mean the same."""
    old_c = canonical(old) if old else {}
    new_c = canonical(new)
    if old_c == new_c:
        return ""

    def lines(p):
        return json.dumps(p, indent=2, sort_keys=True).splitlines(keepends=True)

    return "".join(
        difflib.unified_diff(lines(old_c) if old else [], lines(new_c), fromfile=old_label, tofile=new_label)
    )


def lint_policy(policy: dict | str, *, trust_role_arn: str | None = None) -> list[dict]:
    """Parliament's findings for a policy, as ``{"issue", "severity", "title", "detail", "location"}``.

    Parliament lints identity policies; a trust policy has no ``Resource`` (the role it is attached to is
    the resource), which parliament reports as MALFORMED. So a trust policy is linted with that implicit
    resource written out: ``trust_role_arn``, or any role if not given."""
    # imported here: parliament loads a large IAM definition file
    from parliament import analyze_policy_string, enhance_finding

    doc = json.loads(policy) if isinstance(policy, str) else json.loads(json.dumps(policy))
    for statement in _statements(doc):
        if "Principal" in statement and "Resource" not in statement and "NotResource" not in statement:
            statement["Resource"] = trust_role_arn or "arn:aws:iam::*:role/*"
    analyzed = analyze_policy_string(json.dumps(doc), include_community_auditors=False)
    findings = [enhance_finding(f) for f in analyzed.findings]  # adds severity and title
    return [
        {
            "issue": f.issue,
            "severity": f.severity,
            "title": f.title,
            "detail": f.detail,
            "location": f.location,
        }
        for f in findings
    ]


S3_READ_VERBS = ("get", "list")  # every s3:Get*/s3:List* action is access level Read or List in IAM


def s3_write_actions(policy: dict | str) -> list[str]:
    """The S3 actions the policy's Allow statements grant beyond reading: anything but ``s3:Get*`` /
    ``s3:List*`` (so ``s3:*`` and ``s3:Put*`` count), sorted. ``[]``: S3 access is read-only."""
    doc = json.loads(policy) if isinstance(policy, str) else policy
    found = set()
    for statement in _statements(doc):
        if statement.get("Effect") != "Allow":
            continue
        actions = statement.get("Action", [])
        for action in [actions] if isinstance(actions, str) else actions:
            service, _, name = action.partition(":")
            if service.lower() in ("s3", "*") and not name.lower().startswith(S3_READ_VERBS):
                found.add(action)
    return sorted(found)


def _statements(policy: dict) -> list[dict]:
    statements = policy.get("Statement", [])
    return statements if isinstance(statements, list) else [statements]


def main(argv: list[str] | None = None) -> None:
    """``python -m kinesis_lab.cloud.policies firehose|uc trust|permissions [--external-id ID]``,
    ``... learner [--account-id ID]`` or ``... bucket tls``: print a policy rendered for the account the
    AWS credentials belong to (on the local target: load ``.lab/local.env`` first), or for the account given
    (nothing is called), to use with the AWS CLI (``file://policy.json``)."""
    import argparse
    import os

    from kinesis_lab.cloud.aws import LabSession, connect_account
    from kinesis_lab.cloud.config import load_config

    parser = argparse.ArgumentParser(prog="python -m kinesis_lab.cloud.policies", description=main.__doc__)
    parser.add_argument("role", choices=["firehose", "uc", "learner", "bucket"])
    parser.add_argument("kind", nargs="?", default="permissions",
                        choices=["trust", "permissions", "bootstrap_trust", "file_events", "tls"])
    parser.add_argument("--external-id", default="0000", help="uc only: the storage credential's external id")
    parser.add_argument("--account-id", help="render for this account without calling AWS")
    parser.add_argument("--partition", default="aws", help="with --account-id: aws, aws-cn or aws-us-gov")
    parser.add_argument("--out", help="write the policy to this file (only once rendered: a failure leaves no "
                                      "empty file, as `> file` would)")
    args = parser.parse_args(argv)
    cfg = load_config()
    if args.account_id:
        session = LabSession(cfg=cfg, account_id=args.account_id, bucket=cfg.bucket_name(args.account_id),
                             endpoint=None, partition=args.partition)
    else:
        from botocore.exceptions import BotoCoreError, ClientError

        try:  # reading who you are creates nothing: no cost opt-in needed
            session = connect_account(cfg, confirm_aws_costs=True, endpoint=os.environ.get("AWS_ENDPOINT_URL"))
        except (BotoCoreError, ClientError) as exc:
            parser.exit(1, f"{parser.prog}: error: cannot learn the account id ({exc}); nothing was written\n")
    if args.role == "learner":
        found = {"permissions": learner_policy(session)}
    elif args.role == "bucket":  # the bucket policy the lab puts on a bucket that has none
        found = {"tls": bucket_tls_policy(None, bucket=session.bucket, partition=session.partition)}
    elif args.role == "firehose":
        found = firehose_policies(session)
    else:
        found = uc_policies(session, external_id=args.external_id, file_events=args.kind == "file_events")
    if args.kind not in found:
        parser.error(f"{args.role} has no {args.kind} policy (it has: {', '.join(found)})")
    write_json(found[args.kind], args.out)


def write_json(value, out: str | None) -> None:
    """Print ``value`` as JSON, or write it to ``out`` (a temporary file renamed: whole or not at all)."""
    import os
    from pathlib import Path

    text = json.dumps(value, indent=2)
    if not out:
        print(text)
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
