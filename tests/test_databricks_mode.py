"""Notebooks 06-09 as they run inside Databricks, every cell, offline.

The runtime's variable (DATABRICKS_RUNTIME_VERSION) is set; an IPython startup file gives each kernel
`dbutils` (widgets) and `spark`, a local session on the local pipeline's metastore (tests/databricks_standins.py);
the databricks-sdk talks to a Unity Catalog API stand-in on 127.0.0.1 that checks every request and validates
credentials from IAM on the local stack (06). AWS is unreachable from the notebooks (AWS_ENDPOINT_URL points at a
closed port): inside Databricks they must not call it.

What stands in for what, honestly: the catalog is `spark_catalog` (open-source Spark's only catalog, holding
the layer schemas the pipeline made), and the landing bucket `s3://<bucket>/` is the local mirror folder the
pipeline read (09's `source_path` widget, the bundle's lab.source_path; Databricks reads the s3:// URL).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import papermill
import pytest
from databricks_standins import EXTERNAL_ID, SETTINGS_VAR, UnityCatalogAPI, write_ipython_startup

from kinesis_lab.cloud import uc
from kinesis_lab.cloud.dataset import SAMPLE_PATH
from kinesis_lab.cloud.records import iter_records
from kinesis_lab.local import pipeline as lp

pytestmark = [pytest.mark.notebooks, pytest.mark.spark]

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
PIPELINE_DIR = REPO / "databricks" / "pipeline"
CATALOG = "spark_catalog"
BUCKET = "jm-demo-s3-lab-123456789012-us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/DatabricksUCRoleKinesisLab"
CREDENTIAL, LOCATION = "kinesis_lab_landing_credential", "kinesis_lab_landing"
DAY = Path("bronze/ingestion_date=2026/11/26")
TOKEN = "dapi-test-token"


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory, pipeline_builds):
    """The sample landed as Firehose writes it (two objects, one record delivered twice), and the local
    pipeline run over it; its Spark Connect server keeps running: the notebooks' ``spark`` connects to it."""
    build = pipeline_builds(tmp_path_factory.mktemp("databricks-mode") / "build")
    mirror = lp.external_location_dir(build)
    records = [r.data for r in iter_records(SAMPLE_PATH)]
    day = mirror / DAY
    day.mkdir(parents=True)
    (day / "salud-firehose-tos3-1-2026-11-26-10-00-00-aaaa").write_bytes(b"".join(records[:300]))
    (day / "salud-firehose-tos3-1-2026-11-26-10-01-00-bbbb").write_bytes(b"".join(records[300:] + records[:1]))
    run = lp.run_pipeline(PIPELINE_DIR, source_path=mirror / "bronze", build_dir=build, echo=None)
    assert run.server == "started" and lp.server_pids(build) == [run.server_pid]
    discovery = json.loads(lp.discovery_path(build).read_text())
    yield {"build": build, "mirror": mirror, "records": len(records),
           "remote": f"sc://{discovery['host']}:{discovery['port']}", "token": discovery["token"]}
    lp.stop_pipeline_server(build)


@pytest.fixture(scope="module")
def workspace():
    with UnityCatalogAPI(token=TOKEN) as api:
        yield api


@pytest.fixture
def databricks_notebook(lakehouse, workspace, tmp_path, monkeypatch):
    """run(name, **widgets): executes notebooks/<name> as inside Databricks; returns the executed notebook
    and what the stand-ins logged (widgets defined, SQL statements)."""
    write_ipython_startup(tmp_path / "ipython")
    for name in [k for k in os.environ if k.startswith(("AWS_", "LAB_", "DATABRICKS_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    monkeypatch.setenv("DATABRICKS_HOST", workspace.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: any AWS call fails
    monkeypatch.setenv("LAB_BUILD_DIR", str(lakehouse["build"]))

    def run(name: str, **widgets: str):
        log = tmp_path / f"{name}.log.jsonl"
        monkeypatch.setenv(SETTINGS_VAR, json.dumps({
            "widgets": widgets, "log": str(log), "s3_mirror": {f"s3://{BUCKET}/": str(lakehouse["mirror"])},
            "remote": lakehouse["remote"], "token": lakehouse["token"], "spark_conf": {"spark.sql.session.timeZone": "UTC"},
        }))
        output = tmp_path / f"{name}.ipynb"
        papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(output), cwd=str(NOTEBOOKS),
                                   kernel_name="python3", progress_bar=False, execution_timeout=600)
        entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return nbformat.read(output, as_version=4), entries

    return run


def text_of(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def widgets_defined(entries) -> dict[str, str]:
    return {e["name"]: e["default"] for e in entries if e["kind"] == "widget"}


ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def iam_user(iam, name: str, policy: dict) -> dict:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="inline", PolicyDocument=json.dumps(policy))
    return iam.create_access_key(UserName=name)["AccessKey"]


@pytest.fixture
def uc_aws(clean_stack):
    """The learner's AWS half on the local stack, IAM enforced: the landing bucket with one object, the UC
    role trusting a user that stands in for Databricks' UC master role, with the placeholder external id (what
    06 makes on the learner's machine). Yields (UCMaster, set_trust(external_id))."""
    import boto3
    from databricks_standins import UCMaster

    from kinesis_lab.local.stack import set_iam_enforcement

    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=clean_stack.endpoint,  # dummy keys: not enforced yet
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    admin = iam_user(iam, "lab-admin", ADMIN_POLICY)
    master = iam_user(iam, "uc-master-stand-in", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": ROLE_ARN}]})
    session = boto3.Session(aws_access_key_id=admin["AccessKeyId"], aws_secret_access_key=admin["SecretAccessKey"],
                            region_name="us-east-1")
    admin_iam = session.client("iam", endpoint_url=clean_stack.endpoint)

    def set_trust(external_id: str) -> dict:
        return uc.ensure_uc_role(admin_iam, role_name=ROLE_ARN.rsplit("/", 1)[1], account_id="123456789012",
                                 bucket=BUCKET, external_id=external_id, tags={"project": "kinesis-lab"},
                                 uc_master_role_arn="arn:aws:iam::123456789012:user/uc-master-stand-in")

    set_iam_enforcement(clean_stack.endpoint, True)
    try:
        s3 = session.client("s3", endpoint_url=clean_stack.endpoint)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key=f"{DAY}/batch-1", Body=b'{"event_id": "e1"}\n')
        set_trust(uc.PLACEHOLDER_EXTERNAL_ID)
        yield UCMaster(clean_stack.endpoint, master["AccessKeyId"], master["SecretAccessKey"]), set_trust
    finally:
        set_iam_enforcement(clean_stack.endpoint, False)


def run_06(databricks_notebook):
    return databricks_notebook("06_unity_catalog_external_location", catalog=CATALOG, bucket=BUCKET,
                               uc_role_arn=ROLE_ARN)


def test_06_inside_databricks_stops_for_the_iam_step_then_completes(databricks_notebook, uc_aws, monkeypatch):
    uc_master, set_trust = uc_aws
    with UnityCatalogAPI(token=TOKEN, uc_master=uc_master) as workspace:
        monkeypatch.setenv("DATABRICKS_HOST", workspace.url)
        # first run: the credential is created; Unity Catalog cannot assume the role with its new external id
        with pytest.raises(papermill.PapermillExecutionError) as first:
            run_06(databricks_notebook)
        assert first.value.ename == "TrustNotUpdated"
        assert uc.trust_step(ROLE_ARN, EXTERNAL_ID) in first.value.evalue
        assert list(workspace.credentials) == [CREDENTIAL] and workspace.locations == {}
        url = f"s3://{BUCKET}/"
        api = "/api/2.1/unity-catalog"
        validate = ("POST", f"{api}/validate-storage-credentials",
                    {"storage_credential_name": CREDENTIAL, "url": url, "read_only": True})
        assert workspace.api_requests() == [
            ("GET", f"{api}/storage-credentials/{CREDENTIAL}", None),
            ("POST", f"{api}/storage-credentials", {
                "name": CREDENTIAL, "aws_iam_role": {"role_arn": ROLE_ARN}, "read_only": True,
                "comment": "kinesis lab: Firehose landing bucket (read-only)", "skip_validation": True}),
            validate,  # once, at once: nobody can trust an external id issued a moment ago
        ]

        set_trust(EXTERNAL_ID)  # the step the message names, on the learner's machine
        workspace.requests.clear()
        nb, entries = run_06(databricks_notebook)
        assert widgets_defined(entries) == {"catalog": "kinesis_lab", "managed_location": "", "bucket": "",
                                            "uc_role_arn": ""}
        assert workspace.problems == []
        assert workspace.api_requests() == [
            ("GET", f"{api}/storage-credentials/{CREDENTIAL}", None),
            validate,
            ("GET", f"{api}/external-locations/{LOCATION}", None),
            ("POST", f"{api}/external-locations", {
                "name": LOCATION, "url": url, "credential_name": CREDENTIAL, "read_only": True,
                "comment": "kinesis lab: Firehose landing bucket (read-only)", "enable_file_events": False}),
            ("POST", f"{api}/validate-storage-credentials", {**validate[2], "external_location_name": LOCATION}),
            ("GET", f"{api}/external-locations/{LOCATION}", None),  # DESCRIBE EXTERNAL LOCATION in sql/02
            ("GET", f"{api}/storage-credentials/{CREDENTIAL}", None),  # the check reads both back
            ("GET", f"{api}/external-locations/{LOCATION}", None),
        ]
    every_output = "".join(text_of(c) for c in nb.cells)
    assert f"created read-only external location {LOCATION} -> {url}" in every_output
    assert [e["value"] for e in entries if e["kind"] == "exit"] == [
        f"Unity Catalog reads {url} through {LOCATION}: next, 07"]
    assert f"Notebook exited: Unity Catalog reads {url}" in every_output
    part_b = [i for i, c in enumerate(nb.cells) if c.source.startswith("## Part B")][0]
    assert not any(c.get("outputs") for c in nb.cells[part_b:])  # nothing after the exit ran
    # every statement of sql/01 and sql/02, in order; what only Unity Catalog knows went to the stand-in
    rendered = [uc.render_sql(name, catalog=CATALOG, managed_location=None, bucket=BUCKET, credential=CREDENTIAL,
                              location=LOCATION, principal="account users")
                for name in ("01_catalog_and_schemas", "02_external_location")]
    statements = [s for sql in rendered for s in uc.sql_statements(sql)]
    ran = [(e["by"], e["statement"]) for e in entries if e["kind"] == "sql"]
    assert [s for _, s in ran] == statements
    assert [s.split("`")[0].split("'")[0].strip() for by, s in ran if by == "stand-in"] == [
        "CREATE CATALOG IF NOT EXISTS", "CREATE EXTERNAL LOCATION IF NOT EXISTS", "GRANT READ FILES ON EXTERNAL LOCATION",
        "DESCRIBE EXTERNAL LOCATION", "LIST"]
    # LIST: the year folder directly under bronze/, not the objects below it
    assert "ingestion_date=2026/" in every_output and "salud-firehose-tos3" not in every_output


def test_06_inside_databricks_refuses_a_location_on_another_url(databricks_notebook, uc_aws, monkeypatch):
    uc_master, set_trust = uc_aws
    set_trust(EXTERNAL_ID)
    with UnityCatalogAPI(token=TOKEN, uc_master=uc_master) as workspace:
        monkeypatch.setenv("DATABRICKS_HOST", workspace.url)
        workspace.credentials[CREDENTIAL] = {"name": CREDENTIAL, "read_only": True, "aws_iam_role": {
            "role_arn": ROLE_ARN, "external_id": EXTERNAL_ID}}
        theirs = {"name": LOCATION, "url": "s3://another-bucket/", "credential_name": CREDENTIAL, "read_only": True}
        workspace.locations[LOCATION] = dict(theirs)
        with pytest.raises(papermill.PapermillExecutionError) as failed:
            run_06(databricks_notebook)
        assert workspace.locations[LOCATION] == theirs  # unchanged
    assert failed.value.ename == "LocationMismatch"
    assert (f"external location {LOCATION} already exists on s3://another-bucket/ with credential {CREDENTIAL}, "
            f"not on s3://{BUCKET}/ with {CREDENTIAL}: the lab will not change it. Drop it (DROP EXTERNAL LOCATION "
            f"`{LOCATION}`) if it is the lab's, or choose another name with location_name") in failed.value.evalue


def test_07_inside_databricks_reads_bronze(databricks_notebook, lakehouse):
    nb, entries = databricks_notebook("07_pipeline_bronze", catalog=CATALOG)
    assert widgets_defined(entries) == {"catalog": "kinesis_lab"}
    assert f"bronze_events: {lakehouse['records'] + 1} rows" in "".join(text_of(c) for c in nb.cells)


def test_08_inside_databricks_reads_silver(databricks_notebook, lakehouse):
    records = lakehouse["records"]
    nb, _ = databricks_notebook("08_pipeline_silver", catalog=CATALOG)
    counts = " ".join("".join(text_of(c) for c in nb.cells if "# NBVAL_CHECK_OUTPUT" in c.source).split())
    assert f"bronze rows {records + 1}" in counts and f"silver + quarantine {records}" in counts


def test_09_inside_databricks_reconciles_what_landed(databricks_notebook, workspace, lakehouse):
    records = lakehouse["records"]
    source_path = (lakehouse["mirror"] / "bronze").as_uri()
    nb, entries = databricks_notebook("09_gold_dashboard", catalog=CATALOG, bucket=BUCKET, source_path=source_path)
    assert widgets_defined(entries) == {"catalog": "kinesis_lab", "bucket": "", "source_path": ""}
    output = "".join(text_of(c) for c in nb.cells)
    assert f"every hop reconciles: {source_path} -> spark_catalog.bronze -> spark_catalog.silver" in output
    silver = len(lp.read_table(lakehouse["build"], "silver_events"))
    quarantine = len(lp.read_table(lakehouse["build"], "silver_quarantine"))
    assert silver + quarantine == records
    for figure, value in {"landed lines": records + 1, "landed events": records, "bronze rows": records + 1,
                          "silver rows": silver, "quarantine rows": quarantine,
                          "landed event ids in neither silver table": 0,
                          "event ids more than once in silver + quarantine": 0}.items():
        assert f"{figure} {value}" in " ".join(output.split()), figure
    assert workspace.problems == [] and workspace.api_requests() == []  # 07-09 call no Unity Catalog API


def test_09_inside_databricks_fails_when_lines_landed_after_the_pipeline_ran(databricks_notebook, lakehouse):
    late = lakehouse["mirror"] / DAY / "salud-firehose-tos3-1-2026-11-26-11-00-00-cccc"
    first = next(iter_records(SAMPLE_PATH)).data
    late_line = first.replace(b'"event_id":"', b'"event_id":"late-')
    assert late_line != first and b'"event_id":"late-' in late_line  # a new event id, not the first one again
    late.write_bytes(late_line)
    try:
        with pytest.raises(papermill.PapermillExecutionError) as failed:
            databricks_notebook("09_gold_dashboard", catalog=CATALOG, bucket=BUCKET,
                                source_path=(lakehouse["mirror"] / "bronze").as_uri())
    finally:
        late.unlink()
    records = lakehouse["records"]
    source_path = (lakehouse["mirror"] / "bronze").as_uri()
    assert failed.value.ename == "AssertionError"
    assert f"bronze_events has {records + 1} rows, {records + 2} lines landed under {source_path}: run the pipeline " \
           "again if files landed since its last update" in failed.value.evalue
    assert f"silver_events + silver_quarantine have {records} rows, {records + 1} distinct events landed" \
           in failed.value.evalue
    assert "1 landed event ids in neither silver table" in failed.value.evalue
