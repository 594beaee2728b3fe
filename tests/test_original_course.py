"""The original course's own files against the local stack: its delivery.json (refused at create, as on AWS)
and its producer (tests/original_course/, recreated from its description; only the dataset path changed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

HERE = Path(__file__).parent / "original_course"


def test_original_delivery_json_is_refused_at_create_naming_the_fix(aws_clients):
    request = json.loads((HERE / "delivery.json").read_text())
    aws_clients("s3").create_bucket(Bucket="jm-demo-s3-lab")
    aws_clients("kinesis").create_stream(StreamName="jm-demo-kinesis-lab",
                                         StreamModeDetails={"StreamMode": "ON_DEMAND"})
    firehose = aws_clients("firehose")
    with pytest.raises(ClientError) as refused:
        firehose.create_delivery_stream(**request)
    assert refused.value.response["Error"] == {
        "Code": "InvalidArgumentException",
        "Message": "ErrorOutputPrefix: '!{firehose:error-output-type/' at position 7 is never closed: "
                   "add the missing '}'",
    }
    assert firehose.list_delivery_streams()["DeliveryStreamNames"] == []


def clean_copy(tmp_path: Path) -> Path:
    """The sample's well-formed rows only (the original producer's pandas.read_csv stops at a bad line), with
    values written as pandas would not write them back ("12.50", "3") to show matching is by value."""
    import csv

    from kinesis_lab.cloud.dataset import COLUMNS, SAMPLE_PATH

    with SAMPLE_PATH.open(encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.reader(fh) if len(r) == len(COLUMNS)]
    header, rows = rows[0], rows[1:]
    rows = [r for r in rows if all(v.strip() for v in r) and '"' not in "".join(r)]
    rate = header.index("Child_Labor_Rate_Percent")
    rows[0][rate] = f"{float(rows[0][rate]):.2f}"
    rows.append(list(rows[1]))  # an identical row: two ids, two copies
    path = tmp_path / "child_labor_clean.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows([header, *rows])
    return path


def test_original_producer_records_are_recognised_by_content_in_s3_and_the_ledger(aws_clients, tmp_path):
    import os
    import subprocess
    import sys

    from kinesis_lab.cloud.content import ContentIds
    from kinesis_lab.cloud.firehose_config import build_delivery_stream_request, create_delivery_stream
    from kinesis_lab.cloud.landing import reconcile, wait_for_landing
    from kinesis_lab.cloud.ledger import build_ledger
    from kinesis_lab.cloud.records import iter_records

    csv_path = clean_copy(tmp_path)
    expected = {r.event_id for r in iter_records(csv_path)}
    bucket, stream, prefix = "jm-demo-s3-lab", "jm-demo-kinesis-lab", "bronze/ingestion_date=!{timestamp:yyyy/MM/dd}/"
    aws_clients("s3").create_bucket(Bucket=bucket)
    kinesis = aws_clients("kinesis")
    kinesis.create_stream(StreamName=stream, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    create_delivery_stream(aws_clients("firehose"), build_delivery_stream_request(
        delivery_stream_name="salud-firehose-tos3", stream_arn=arn,
        role_arn="arn:aws:iam::123456789012:role/FirehoseToS3Role", bucket_arn=f"arn:aws:s3:::{bucket}",
        prefix=prefix, error_output_prefix="errors/!{firehose:error-output-type}/", buffer_size_mb=1,
        buffer_interval_seconds=0))  # fmt: skip

    sent = subprocess.run([sys.executable, str(HERE / "producer-to_kinesis.py"), str(csv_path)], env=os.environ,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines()[-1] == "done"

    landing = wait_for_landing(aws_clients("s3"), bucket, "bronze/", expected, timeout=120,
                               content=ContentIds(csv_path))  # fmt: skip
    figures = reconcile(expected, landing)
    assert figures["missing_event_ids"] == 0 and figures["unexpected_event_ids"] == 0
    assert figures["s3_records_recognised_by_content"] == len(expected) == figures["s3_records"]
    assert figures["s3_unparsed_lines"] == 0 and figures["s3_duplicate_event_ids"] == 0

    ledger = build_ledger(csv_path, kinesis=kinesis, stream_name=stream, s3=aws_clients("s3"), bucket=bucket,
                          prefix=prefix)  # fmt: skip
    assert [f for f in ledger.sent if f.counts["kinesis"] != 1 or f.counts["s3"] != 1] == []
    assert ledger.hops["kinesis"].no_id == 0 and ledger.hops["s3"].no_id == 0
    for where in ("Kinesis stream", "S3 landing"):
        assert (f"{len(expected)} record(s) in the {where} carry no event_id (sent by another producer, such as "
                "the original course's): recognised by their content as the CSV's rows and counted as them"
                ) in ledger.notes


def test_a_row_no_csv_line_has_stays_unrecognised(tmp_path):
    from collections import Counter

    from kinesis_lab.cloud.content import ContentIds, content_key, parse_record

    csv_path = clean_copy(tmp_path)
    _, key = parse_record(json.dumps({"Country": "Atlantis", "Country_Code": "ATL", "Region": "Sea", "Year": 2010,
                                      "Child_Labor_Rate_Percent": 1.0, "Estimated_Children_Millions": 0.1,
                                      "Gender": "Total", "Age_Group": "5-17 years"}))  # fmt: skip
    ids, unknown = ContentIds(csv_path).attribute(Counter({key: 2}))
    assert ids == Counter() and unknown == 2
    assert content_key(["x", "12.50", "", "NaN"]) == content_key(["x", 12.5, float("nan"), None])


@pytest.mark.notebooks  # runs notebook 05 in a kernel: make test-notebooks
def test_notebook_05_reconciles_the_original_producers_records(private_stack_dir, tmp_path, monkeypatch):
    """The original producer instead of 04 (nothing in the run summary), then 05 given the file it sent: 05 finds
    every row in S3 by content, says so in one line, and passes."""
    import os
    import subprocess
    import sys

    import boto3
    import nbformat
    import papermill

    from kinesis_lab.cloud.firehose_config import build_delivery_stream_request, create_delivery_stream
    from kinesis_lab.cloud.records import iter_records
    from kinesis_lab.local import stack

    state, _ = stack.up(private_stack_dir, "us-east-1")
    for key in [k for k in os.environ if k.startswith("LAB_")]:
        monkeypatch.delenv(key)
    for key, value in {**stack.local_env(state.endpoint, "us-east-1"), "LAB_STATE_DIR": str(private_stack_dir),
                       "LAB_BUILD_DIR": str(tmp_path / "build"), "LAB_TARGET": "local"}.items():
        monkeypatch.setenv(key, value)
    csv_path = clean_copy(tmp_path)
    bucket, stream = "jm-demo-s3-lab-123456789012-us-east-1", "jm-demo-kinesis-lab"
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
    kinesis = boto3.client("kinesis", region_name="us-east-1")
    kinesis.create_stream(StreamName=stream, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    create_delivery_stream(boto3.client("firehose", region_name="us-east-1"), build_delivery_stream_request(
        delivery_stream_name="salud-firehose-tos3", stream_arn=arn,
        role_arn="arn:aws:iam::123456789012:role/FirehoseToS3Role", bucket_arn=f"arn:aws:s3:::{bucket}",
        prefix="bronze/ingestion_date=!{timestamp:yyyy/MM/dd}/",
        error_output_prefix="errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/", buffer_size_mb=1,
        buffer_interval_seconds=5))  # fmt: skip
    sent = subprocess.run([sys.executable, str(HERE / "producer-to_kinesis.py"), str(csv_path)], env=os.environ,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert sent.returncode == 0, sent.stderr

    [path] = (Path(__file__).resolve().parents[1] / "notebooks").glob("05_*.ipynb")
    papermill.execute_notebook(str(path), str(tmp_path / path.name), cwd=str(path.parent), progress_bar=False,
                               kernel_name="python3", parameters={"dataset": str(csv_path)})
    nb = nbformat.read(tmp_path / path.name, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    n = len({r.event_id for r in iter_records(csv_path)})
    assert (f"{n} record(s) in S3 carry no event_id (sent by another producer, such as the original course's): "
            "recognised by their content as the CSV's rows and counted as them") in text
    assert f"all {n} records are in S3" in text and "note: 04 recorded no sending in this run" in text
