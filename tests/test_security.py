"""Nobody let in: least-privilege IAM (enforced by moto), loopback-only services, the cost opt-in, teardown's
tag check, and no credential in any file the repository holds.

Covered elsewhere, not repeated here:
- policy shape (scoped resources, no wildcard action, no ``Resource: "*"``) and parliament with no findings:
  tests/test_policies.py (test_no_wildcard_actions_and_no_star_resource, test_parliament_finds_nothing,
  test_parliament_flags_the_original_course_policy);
- the UC role with IAM enforced: tests/test_uc.py;
- moto and the Firehose service on 127.0.0.1 only: tests/test_stack_cli.py::test_stack_listens_on_loopback_only;
  the pipeline's Spark processes, seen listening during a real run: tests/test_faults.py
  (test_the_pipelines_spark_server_listens_on_loopback_only);
- `kinesis-lab ... --target aws` without the opt-in: tests/test_stack_cli.py::test_aws_target_without_opt_in_is_refused;
- teardown deletes only what carries the lab's tag, and in the bucket only the lab's prefixes: tests/test_teardown.py;
- names the lab did not create are never changed (notebooks 01, 02, 99) and the learner's own IAM policy is enough
  for the whole series, enforced: tests/test_notebooks_ownership_and_aws_target.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from kinesis_lab.cloud import policies, teardown
from kinesis_lab.local import pipeline as lp
from kinesis_lab.local.pipeline import spark_cli
from kinesis_lab.local.stack import set_iam_enforcement

REPO = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's
LAB_BUCKET = f"jm-demo-s3-lab-{ACCOUNT}-{REGION}"
OTHER_BUCKET = "not-the-labs-bucket"
STREAM = "jm-demo-kinesis-lab"
FIREHOSE_ROLE = "FirehoseToS3Role"
LAB_TAGS = {"project": "kinesis-lab", "course": "kinesis-firehose-s3-databricks"}


# --- IAM, enforced by moto ---------------------------------------------------------------------------
def user_session(iam, name: str, policy: dict) -> boto3.Session:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="inline", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return boto3.Session(
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], region_name=REGION
    )


def error_code(call) -> str:
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return ""


DENIED = {"AccessDenied", "403", "AccessDeniedException"}


def test_firehose_role_writes_its_bucket_and_nothing_else(aws_clients, clean_stack):
    """The Firehose role with the lab's rendered policies, assumed through STS with moto checking IAM.

    moto cannot act as the firehose.amazonaws.com service, so the role's trust is the rendered one with a
    stand-in user as principal (same action, same external-id condition). moto 5.2 gaps: a trust statement
    whose principal is a Service makes moto's AssumeRole check fail with HTTP 500 (TypeError in
    ``_check_principal``), so the rendered trust itself cannot be evaluated here; moto checks S3 against
    resource ARNs, but Kinesis and Firehose actions only against "*" (the stream scoping is checked in
    test_policies)."""
    iam, s3 = aws_clients("iam"), aws_clients("s3")
    for bucket in (LAB_BUCKET, OTHER_BUCKET):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=OTHER_BUCKET, Key="private.json", Body=b"{}")
    values = dict(
        account_id=ACCOUNT,
        region=REGION,
        bucket=LAB_BUCKET,
        stream_name=STREAM,
        log_group="/aws/kinesisfirehose/salud-firehose-tos3",
    )
    rendered = policies.firehose_policies(**values)
    stand_in_arn = f"arn:aws:iam::{ACCOUNT}:user/firehose-stand-in"
    [statement] = rendered["trust"]["Statement"]
    assert statement["Principal"] == {"Service": "firehose.amazonaws.com"}
    trust = {**rendered["trust"], "Statement": [{**statement, "Principal": {"AWS": stand_in_arn}}]}
    iam.create_role(RoleName=FIREHOSE_ROLE, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName=FIREHOSE_ROLE,
        PolicyName="firehose-delivery",
        PolicyDocument=json.dumps(rendered["permissions"]),
    )
    stand_in = user_session(
        iam,
        "firehose-stand-in",
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": f"arn:aws:iam::{ACCOUNT}:role/*"}
            ],
        },
    )
    other = user_session(
        iam,
        "someone-else",
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": f"arn:aws:iam::{ACCOUNT}:role/*"}
            ],
        },
    )

    set_iam_enforcement(clean_stack.endpoint, True)
    try:
        sts = stand_in.client("sts")

        def assume(role: str, **kwargs):
            return sts.assume_role(
                RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}", RoleSessionName="fh", **kwargs
            )

        # the external id must be the account's (the confused-deputy guard), and only the trusted principal
        assert error_code(lambda: assume(FIREHOSE_ROLE, ExternalId="999999999999")) in DENIED
        assert (
            error_code(
                lambda: other.client("sts").assume_role(
                    RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{FIREHOSE_ROLE}",
                    RoleSessionName="other",
                    ExternalId=ACCOUNT,
                )
            )
            in DENIED
        )
        creds = assume(FIREHOSE_ROLE, ExternalId=ACCOUNT)["Credentials"]
        role = boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name=REGION,
        )
        role_s3 = role.client("s3")
        key = "bronze/ingestion_date=2026/01/01/salud-firehose-tos3-1-x"
        role_s3.put_object(Bucket=LAB_BUCKET, Key=key, Body=b'{"event_id": "a"}\n')  # its job
        assert role_s3.get_object(Bucket=LAB_BUCKET, Key=key)["Body"].read() == b'{"event_id": "a"}\n'
        assert [o["Key"] for o in role_s3.list_objects_v2(Bucket=LAB_BUCKET)["Contents"]] == [key]
        refused = {
            "put in another bucket": lambda: role_s3.put_object(Bucket=OTHER_BUCKET, Key="x", Body=b"x"),
            "read another bucket": lambda: role_s3.get_object(Bucket=OTHER_BUCKET, Key="private.json"),
            "list another bucket": lambda: role_s3.list_objects_v2(Bucket=OTHER_BUCKET),
            "delete in its bucket": lambda: role_s3.delete_object(Bucket=LAB_BUCKET, Key=key),
            "delete its bucket": lambda: role_s3.delete_bucket(Bucket=LAB_BUCKET),
            "create a bucket": lambda: role_s3.create_bucket(Bucket="new-bucket-by-firehose"),
            "change the bucket policy": lambda: role_s3.put_bucket_policy(Bucket=LAB_BUCKET, Policy="{}"),
            "write to Kinesis": lambda: role.client("kinesis").put_records(
                StreamName=STREAM, Records=[{"Data": b"x", "PartitionKey": "k"}]
            ),
            "create a stream": lambda: role.client("kinesis").create_stream(StreamName="s", ShardCount=1),
            "read IAM": lambda: role.client("iam").list_roles(),
            "change its own policy": lambda: role.client("iam").put_role_policy(
                RoleName=FIREHOSE_ROLE,
                PolicyName="more",
                PolicyDocument=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                    }
                ),
            ),
        }
        outcomes = {what: error_code(call) for what, call in refused.items()}
        assert {what for what, code in outcomes.items() if code not in DENIED} == set(), outcomes
    finally:
        set_iam_enforcement(clean_stack.endpoint, False)
    assert s3.list_objects_v2(Bucket=OTHER_BUCKET)["KeyCount"] == 1  # untouched


def test_s3_requests_are_checked_as_the_iam_actions_aws_names(aws_clients, clean_stack):
    """AWS checks ListObjectsV2 and HeadBucket as ``s3:ListBucket`` (the service authorization reference has no
    ``s3:ListObjectsV2`` action). moto 5.2.6 started checking the API operation's name instead, so every policy
    written for AWS was refused a listing (issue 20); the lab's moto server maps them back (moto_server.py)."""
    iam, s3 = aws_clients("iam"), aws_clients("s3")
    s3.create_bucket(Bucket=LAB_BUCKET)
    s3.put_object(Bucket=LAB_BUCKET, Key="bronze/a.json", Body=b"{}")
    bucket_arn = f"arn:aws:s3:::{LAB_BUCKET}"
    aws_named = user_session(iam, "aws-named", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn}]})
    operation_named = user_session(iam, "operation-named", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListObjectsV2", "s3:HeadBucket"], "Resource": bucket_arn}]})
    set_iam_enforcement(clean_stack.endpoint, True)
    try:
        allowed, refused = aws_named.client("s3"), operation_named.client("s3")
        assert [o["Key"] for o in allowed.list_objects_v2(Bucket=LAB_BUCKET)["Contents"]] == ["bronze/a.json"]
        assert allowed.head_bucket(Bucket=LAB_BUCKET)["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert error_code(lambda: refused.list_objects_v2(Bucket=LAB_BUCKET)) in DENIED
        assert error_code(lambda: allowed.get_object(Bucket=LAB_BUCKET, Key="bronze/a.json")) in DENIED
    finally:
        set_iam_enforcement(clean_stack.endpoint, False)


def test_teardown_that_cannot_read_a_buckets_tags_deletes_nothing(aws_clients, clean_stack):
    """A bucket of the lab's name whose tags teardown may not read (on AWS: the name is taken by another
    account) is not emptied: the error stops teardown before any delete."""
    s3, iam = aws_clients("s3"), aws_clients("iam")
    s3.create_bucket(Bucket=LAB_BUCKET)
    s3.put_bucket_tagging(
        Bucket=LAB_BUCKET, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in LAB_TAGS.items()]}
    )
    s3.put_object(Bucket=LAB_BUCKET, Key="keep.txt", Body=b"precious")
    cleaner = user_session(
        iam,
        "cleaner",
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:GetBucketTagging", "Resource": "*"},
            ],
        },
    )
    set_iam_enforcement(clean_stack.endpoint, True)
    try:
        with pytest.raises(ClientError) as err:
            teardown.delete_bucket(cleaner.client("s3"), LAB_BUCKET, LAB_TAGS, prefixes=["bronze/", "errors/"])
    finally:
        set_iam_enforcement(clean_stack.endpoint, False)
    assert err.value.response["Error"]["Code"] in DENIED
    assert s3.get_object(Bucket=LAB_BUCKET, Key="keep.txt")["Body"].read() == b"precious"


# --- the cost opt-in, as a notebook calls it ---------------------------------------------------------
def test_connect_to_aws_without_the_opt_in_is_refused_before_anything_happens(monkeypatch):
    from kinesis_lab.cloud import aws
    from kinesis_lab.cloud.config import load_config
    from kinesis_lab.local import targets

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setattr(
        boto3, "client", lambda *a, **k: pytest.fail("no AWS call may be made without the opt-in")
    )
    for value in (None, "", "0", "no", "false"):
        if value is None:
            monkeypatch.delenv(aws.COST_OPT_IN_VAR, raising=False)
        else:
            monkeypatch.setenv(aws.COST_OPT_IN_VAR, value)
        with pytest.raises(aws.CostOptInRequired, match="LAB_CONFIRM_AWS_COSTS=1"):
            targets.connect(load_config(target="aws"))
        with pytest.raises(aws.CostOptInRequired):
            targets.connect(load_config(target="aws"), confirm_aws_costs=False)
    import os

    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"  # refused before touching the environment
    for value in ("1", "true", "yes"):
        monkeypatch.setenv(aws.COST_OPT_IN_VAR, value)
        aws.require_cost_opt_in()  # accepted
    monkeypatch.delenv(aws.COST_OPT_IN_VAR)
    aws.require_cost_opt_in(True)  # the notebook parameter confirm_aws_costs=True


# --- the pipeline's Spark processes ---------------------------------------------------------------------
LOOPBACK_DRIVER = {"spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1"}


def test_pipeline_spark_is_started_on_loopback_only(tmp_path, monkeypatch):
    """What the pipeline subprocess hands Spark when it starts it (no JVM started here): the Connect
    server's gRPC port on 127.0.0.1, and the driver's own ports (RPC, block manager) too - without
    spark.driver.bindAddress Spark binds those to the host's network address (seen in a real run:
    tests/test_faults.py::test_the_pipelines_spark_server_listens_on_loopback_only)."""
    import pyspark.sql.connect.local_server as local_server
    from pyspark.sql.connect.session import SparkSession as RemoteSparkSession

    class Started(Exception):
        pass

    seen: dict[str, dict] = {}

    def in_process(master, opts):  # the run's own JVM (reuse_server=False, or before the server mode)
        seen["in-process"] = {"master": master, **opts}
        raise Started

    def build_server(master, conf):  # the build folder's long-lived Connect server
        seen["server"] = {"master": master, **conf}
        raise Started

    monkeypatch.setattr(RemoteSparkSession, "_start_connect_server", staticmethod(in_process))
    monkeypatch.setattr(local_server, "reuse_or_start_local_connect_server", build_server, raising=False)
    _, static = lp.spark_settings(source_path=tmp_path / "src", build_dir=tmp_path)
    monkeypatch.setenv(lp.STATIC_CONF_ENV, json.dumps(static))
    spec = lp.render_spec(REPO / "databricks" / "pipeline", build_dir=tmp_path, configuration={})
    monkeypatch.setattr(sys, "argv", ["local_pipeline.py", "run", "--spec", str(spec)])
    server_env = getattr(lp, "SERVER_ENV", None)
    modes = ["in-process"] + (["server"] if server_env else [])
    for mode in modes:
        if server_env and mode == "server":
            monkeypatch.setenv(server_env, str(lp.lakehouse_dir(tmp_path).resolve()))
        elif server_env:
            monkeypatch.delenv(server_env, raising=False)
        with pytest.raises(Started):
            spark_cli.pipelines_cli()
    assert sorted(seen) == sorted(modes)
    for mode, conf in seen.items():
        assert conf["master"].startswith("local"), mode  # no cluster: one JVM on this machine
        assert conf["spark.ui.enabled"] == "false", mode  # no web UI port
        assert {k: conf.get(k) for k in LOOPBACK_DRIVER} == LOOPBACK_DRIVER, mode
    assert seen["in-process"]["spark.connect.grpc.binding.address"] == "127.0.0.1"
    if "server" in seen:  # pyspark's launcher pins the server's gRPC address itself
        source = Path(local_server.__file__).read_text()
        assert '"spark.connect.grpc.binding.address=127.0.0.1"' in source


# --- no credentials in the repository --------------------------------------------------------------------
# placeholders the docs and moto use: moto's account, Databricks' UC master account, AWS doc examples
PLACEHOLDER_ACCOUNTS = {"123456789012", "414351767826"}
DOC_EXAMPLE_ACCOUNT = re.compile(r"(\d)\1{3}(\d)\2{3}(\d)\3{3}")  # 111122223333, 444455556666, ...
EXAMPLE_KEYS = {"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}  # AWS docs' examples
PATTERNS = {
    "AWS access key id": re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),
    "AWS secret access key": re.compile(
        r"aws_secret_access_key\W{0,6}([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])", re.IGNORECASE
    ),
    "Databricks token": re.compile(r"(?<![0-9a-z])dapi[0-9a-f]{32}(?![0-9a-f])"),
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "AWS account id": re.compile(r"(?<![0-9A-Za-z.])\d{12}(?![0-9A-Za-z])"),
}
# 12 digits that are not account ids: a UUID's last group, a long hex digest, a Kinesis shard id
NOT_ACCOUNT_IDS = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?<![0-9A-Za-z])[0-9a-f]{20,}(?![0-9A-Za-z])|shardId-\d{12}"
)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str
    text: str  # the match, cut: never print a whole secret


def _allowed(kind: str, value: str) -> bool:
    if kind == "AWS account id":
        return value in PLACEHOLDER_ACCOUNTS or bool(DOC_EXAMPLE_ACCOUNT.fullmatch(value))
    return value in EXAMPLE_KEYS


def scan_text(text: str, where: str) -> list[Finding]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        masked = NOT_ACCOUNT_IDS.sub(lambda m: "x" * len(m.group()), line)
        for kind, pattern in PATTERNS.items():
            for match in pattern.finditer(masked if kind == "AWS account id" else line):
                value = match.group(match.lastindex or 0)
                if not _allowed(kind, value):
                    found.append(Finding(where, number, kind, value[:8] + "..."))
    return found


def notebook_texts(raw: str) -> list[tuple[str, str]]:
    """(label, text) of every cell's source and every stored output (image data left out: base64)."""
    notebook = json.loads(raw)
    out = []
    for n, cell in enumerate(notebook.get("cells", []), start=1):
        out.append((f"cell {n} source", "".join(cell.get("source", ""))))
        for m, output in enumerate(cell.get("outputs", []), start=1):
            parts = [output.get("text", ""), "\n".join(output.get("traceback", [])), output.get("evalue", "")]
            for mime, data in output.get("data", {}).items():
                if not mime.startswith("image/"):
                    parts.append(
                        data
                        if isinstance(data, str)
                        else "".join(data)
                        if isinstance(data, list)
                        else json.dumps(data)
                    )
            out.append(
                (f"cell {n} output {m}", "\n".join("".join(p) if isinstance(p, list) else p for p in parts))
            )
    return out


def scan_file(path: Path, label: str) -> list[Finding]:
    raw = path.read_bytes()
    if b"\0" in raw[:8192]:
        return []  # binary (images): no text secrets to find
    text = raw.decode("utf-8", errors="replace")
    found = scan_text(text, label)
    if path.suffix == ".ipynb":
        for where, part in notebook_texts(text):
            found += scan_text(part, f"{label} ({where})")
    return found


def repository_files() -> list[str]:
    """Every tracked file, and every untracked file not ignored (what a commit of everything would add)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({name for name in listed.split("\0") if name and (REPO / name).is_file()})


def test_scanner_finds_planted_secrets(tmp_path):
    # built at run time, so this file itself holds none of them
    key_id = "AKIA" + "Q7ZX" * 4
    secret = "Zq9/" * 10
    token = "dapi" + "0a1b2c3d" * 4
    account = "8472" + "9301" + "5566"
    planted = tmp_path / "settings.env"
    planted.write_text(
        "# harmless: moto's 123456789012, Databricks' 414351767826, arn:aws:iam::111122223333:root\n"
        "# AWS docs' example AKIAIOSFODNN7EXAMPLE, event 1f0e2d3c-4b5a-5968-8776-847293015566, shardId-000000000001\n"
        f"AWS_ACCESS_KEY_ID={key_id}\n"
        f'aws_secret_access_key = "{secret}"\n'
        f"DATABRICKS_TOKEN={token}\n"
        "-----BEGIN RSA " + "PRIVATE KEY-----\n"
        f"role = arn:aws:iam::{account}:role/FirehoseToS3Role\n"
        f"bucket = jm-demo-s3-lab-{account}-us-east-1\n"
    )
    assert [(f.line, f.kind) for f in scan_file(planted, "settings.env")] == [
        (3, "AWS access key id"),
        (4, "AWS secret access key"),
        (5, "Databricks token"),
        (6, "private key"),
        (7, "AWS account id"),
        (8, "AWS account id"),
    ]
    assert all(secret not in f.text and key_id not in f.text for f in scan_file(planted, "x"))

    notebook = tmp_path / "nb.ipynb"
    notebook.write_text(
        json.dumps(
            {
                "cells": [
                    {
                        "cell_type": "code",
                        "source": ["print(creds)\n"],
                        "outputs": [
                            {
                                "output_type": "stream",
                                "name": "stdout",
                                "text": [f"{{'AccessKeyId': '{key_id.replace('AKIA', 'ASIA')}'\n"],
                            },
                            {
                                "output_type": "display_data",
                                "data": {"image/png": "AAAA" + account, "text/plain": ["ok"]},
                            },
                        ],
                    }
                ]
            }
        )
    )
    assert [(f.path, f.kind) for f in scan_file(notebook, "nb.ipynb")] == [
        ("nb.ipynb", "AWS access key id"),
        ("nb.ipynb (cell 1 output 1)", "AWS access key id"),
    ]


def test_no_credentials_in_the_repository():
    files = repository_files()
    assert "README.md" in files and any(f.endswith(".ipynb") for f in files)
    found = [f for name in files for f in scan_file(REPO / name, name)]
    assert found == [], "\n".join(f"{f.path}:{f.line}: {f.kind} {f.text}" for f in found)
