"""The ledger of a run (kinesis_lab.cloud.ledger, `kinesis-lab reconcile`): every CSV line's fate at each hop."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from kinesis_lab.cloud import ledger as lg
from kinesis_lab.cloud.dataset import COLUMNS, SAMPLE_PATH
from kinesis_lab.cloud.producer import produce_file
from kinesis_lab.cloud.records import iter_records, scan_file
from kinesis_lab.cloud.summary import read_summary, reconciliation_problems
from kinesis_lab.course import cli
from kinesis_lab.local import pipeline as lp

HEADER = ",".join(COLUMNS)
GOOD = "World,WORLD,Global,2020,9.6,160.00,Total,5-17 years"
STREAM = "jm-demo-kinesis-lab"  # the lab's defaults: run_reconcile finds them through load_config
BUCKET = "jm-demo-s3-lab-123456789012-us-east-1"
PREFIX = "bronze/ingestion_date=!{timestamp:yyyy/MM/dd}/"
DAY = "bronze/ingestion_date=2026/01/02/"


# --- the fate of each line (no I/O) ------------------------------------------------------------------
def line_ids(n: int, blank: tuple[int, ...] = ()) -> list[tuple[int, str, str]]:
    return [(line, f"id-{line}", "blank" if line in blank else "row") for line in range(2, n + 2)]


def test_fates_missing_at_the_hop_where_a_line_dropped_out():
    lines = line_ids(9, blank=(9,))
    kinesis = Counter({"id-2": 1, "id-3": 2, "id-5": 1, "id-6": 1, "id-7": 1, "other-file": 3})
    s3 = Counter({"id-2": 1, "id-3": 2, "id-6": 1, "id-7": 1, "id-8": 1})  # id-8 trimmed from Kinesis
    bronze = Counter({"id-2": 1, "id-3": 2, "id-6": 1, "id-7": 1, "id-8": 1})
    in_silver = {"id-2": 1, "id-3": 1, "id-7": 1, "id-8": 1}
    quarantined = {"id-7": [("rate_in_range",)], "other-q": [("record_parsed",)]}
    silver = Counter(in_silver) + Counter({k: len(v) for k, v in quarantined.items()})
    ledger = lg.assemble(
        "f.csv", "ab" * 32, lines,
        {"kinesis": lg.HopData("kinesis", kinesis, no_id=2), "s3": lg.HopData("s3", s3),
         "bronze": lg.HopData("bronze", bronze, no_id=1), "silver": lg.HopData("silver", silver)},
        in_silver, quarantined,
    )  # fmt: skip
    assert [(f.line, f.fate) for f in ledger.lines] == [
        (2, "silver"),
        (3, "silver"),  # two copies in Kinesis, S3 and bronze (a resend): silver holds it once
        (4, "missing at kinesis"),  # never reached the stream
        (5, "missing at s3"),  # in the stream, never delivered
        (6, "missing at silver"),  # in bronze, in neither silver table
        (7, "silver and quarantine"),
        (8, "silver"),  # absent from the stream (retention), present after it: not lost
        (9, lg.BLANK),
        (10, "missing at kinesis"),
    ]
    assert [f.line for f in ledger.duplicated] == [7]
    assert not ledger.ok
    figures = ledger.summary_figures()
    assert figures == {
        "ledger_missing": 4,
        "ledger_duplicated": 1,
        "ledger_hops": {"csv_lines": 9, "csv_records": 8, "kinesis": 5, "s3": 5, "bronze": 5, "silver": 4,
                        "quarantine": 1},
        "ledger_missing_at": {"kinesis": 2, "s3": 1, "silver": 1},
        "ledger_unchecked_hops": [],
    }  # fmt: skip
    rows = {r["hop"]: r for r in ledger.hop_rows()}
    assert (rows["kinesis"]["lines"], rows["kinesis"]["extra_copies"], rows["kinesis"]["other_records"]) == (
        5,
        1,
        5,
    )
    assert rows["silver"]["other_records"] == 1  # other-q: another file's line in quarantine
    assert rows["bronze"]["other_records"] == 1  # a bronze line without an event id
    assert any("1 line(s) are no longer in the Kinesis stream" in n for n in ledger.notes)
    text = ledger.table()
    assert "MISSING: 4 line(s): line 4 (missing at kinesis), line 5 (missing at s3)" in text
    assert "DUPLICATED in silver: 1 line(s): line 7" in text
    assert reconciliation_problems(figures) == [
        "ledger_missing = 4 (expected 0)",
        "ledger_duplicated = 1 (expected 0)",
    ]


def test_unchecked_hops_are_skipped_not_counted_as_losses():
    lines = line_ids(3)
    ledger = lg.assemble(
        "f.csv", "ab" * 32, lines,
        {"kinesis": lg.HopData("kinesis", None, note="stream 'x' does not exist (deleted by teardown?)"),
         "s3": lg.HopData("s3", Counter({"id-2": 1, "id-3": 1}))},
    )  # fmt: skip
    assert [f.fate for f in ledger.lines] == ["in s3 (later hops not checked)"] * 2 + ["missing at s3"]
    assert ledger.summary_figures()["ledger_unchecked_hops"] == ["kinesis", "bronze", "silver"]
    assert ledger.summary_figures()["ledger_hops"]["kinesis"] is None
    assert "Kinesis stream not checked: stream 'x' does not exist (deleted by teardown?)" in ledger.notes
    assert "not checked" in ledger.table().splitlines()[4]
    nothing = lg.assemble("f.csv", "ab" * 32, lines, {})
    assert nothing.ok and not nothing.checked_hops()
    assert {f.fate for f in nothing.lines} == {"in csv (later hops not checked)"}


def test_csv_lines_match_the_producers_ids_and_name_blank_lines(tmp_path):
    path = tmp_path / "blanks.csv"
    path.write_text(f"{HEADER}\n{GOOD}\n\n{GOOD},extra\n  \n{GOOD}\n\n", encoding="utf-8")
    name, sha, lines = lg.csv_lines(path)
    assert (name, sha) == ("blanks.csv", scan_file(path)[0])
    assert [(n, kind) for n, _, kind in lines] == [
        (2, "row"),
        (3, "blank"),
        (4, "malformed"),
        (5, "blank"),
        (6, "row"),
        (7, "blank"),
    ]
    assert [i for _, i, kind in lines if kind != "blank"] == [r.event_id for r in iter_records(path)]
    assert all(i == f"blank-{n}" for n, i, kind in lines if kind == "blank")
    sample = lg.csv_lines(SAMPLE_PATH)[2]
    assert len(sample) == 540 and Counter(k for _, _, k in sample) == {"row": 539, "malformed": 1}


# --- against the local stack -------------------------------------------------------------------------
def land(s3, records: list[bytes], key: str) -> None:
    s3.put_object(Bucket=BUCKET, Key=DAY + key, Body=b"".join(records))


@pytest.fixture
def produced(aws_clients):
    """The sample produced into the lab's stream; its records written to S3 as Firehose would, but with
    one record lost and one delivered twice."""
    kinesis, s3 = aws_clients("kinesis"), aws_clients("s3")
    kinesis.create_stream(StreamName=STREAM, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    s3.create_bucket(Bucket=BUCKET)
    produce_file(SAMPLE_PATH, stream_name=STREAM, kinesis=kinesis, progress=False, batch_size=100)
    records = [r.data for r in iter_records(SAMPLE_PATH)]
    land(s3, records[:300], "salud-firehose-tos3-1-a")
    land(s3, records[301:] + [records[10]], "salud-firehose-tos3-1-b")  # line 302 lost, line 12 twice
    land(s3, [b"not json at all\n"], "dropped-by-someone.txt")
    return kinesis, s3


def test_ledger_reads_every_shard_and_names_the_lost_line(produced, tmp_path):
    kinesis, s3 = produced
    ledger = lg.build_ledger(
        SAMPLE_PATH,
        kinesis=kinesis,
        stream_name=STREAM,
        s3=s3,
        bucket=BUCKET,
        prefix=PREFIX,
        tables=lp.table_reader(tmp_path / "no-pipeline-yet"),
    )
    assert [(f.line, f.fate) for f in ledger.missing] == [(302, "missing at s3")]
    assert ledger.duplicated == []  # two copies in S3 is not a duplicate in silver
    rows = {r["hop"]: r for r in ledger.hop_rows()}
    assert (rows["kinesis"]["lines"], rows["kinesis"]["extra_copies"]) == (540, 0)
    assert (rows["s3"]["lines"], rows["s3"]["extra_copies"], rows["s3"]["other_records"]) == (539, 1, 1)
    assert ledger.summary_figures()["ledger_unchecked_hops"] == ["bronze", "silver"]
    assert ledger.lines[10].counts == {"csv": 1, "kinesis": 1, "s3": 2, "bronze": None, "silver": None}
    assert ledger.lines[0].fate == "in s3 (later hops not checked)"
    assert len(kinesis.list_shards(StreamName=STREAM)["Shards"]) == 4  # the ids were read from all four

    # after teardown the stream is gone: that hop is skipped and said so, the rest still checked
    kinesis.delete_stream(StreamName=STREAM)
    after = lg.build_ledger(
        SAMPLE_PATH, kinesis=kinesis, stream_name=STREAM, s3=s3, bucket=BUCKET, prefix=PREFIX
    )
    assert after.hops["kinesis"].note == "stream 'jm-demo-kinesis-lab' does not exist (deleted by teardown?)"
    assert [(f.line, f.fate) for f in after.missing] == [(302, "missing at s3")]
    s3.delete_object(Bucket=BUCKET, Key=DAY + "salud-firehose-tos3-1-a")
    s3.delete_object(Bucket=BUCKET, Key=DAY + "salud-firehose-tos3-1-b")
    s3.delete_object(Bucket=BUCKET, Key=DAY + "dropped-by-someone.txt")
    s3.delete_bucket(Bucket=BUCKET)
    gone = lg.build_ledger(
        SAMPLE_PATH, kinesis=kinesis, stream_name=STREAM, s3=s3, bucket=BUCKET, prefix=PREFIX
    )
    assert not gone.checked_hops() and gone.hops["s3"].note.startswith("bucket 'jm-demo-s3-lab-")


@pytest.fixture
def lab_env(local_stack, local_stack_dir, tmp_path, monkeypatch):
    """LAB_STATE_DIR / LAB_BUILD_DIR for run_reconcile: the session stack's state folder, a new build folder."""
    monkeypatch.setenv("LAB_STATE_DIR", str(local_stack_dir))
    monkeypatch.setenv("LAB_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.delenv("LAB_TARGET", raising=False)
    return tmp_path / "build"


def test_reconcile_command_prints_the_table_writes_the_summary_and_fails_on_a_loss(produced, lab_env):
    printed: list[str] = []
    assert cli.run_reconcile(dataset=str(SAMPLE_PATH), out=printed.append) == 1
    text = printed[0]
    assert text.startswith("ledger of child_labor_statistics_sample.csv (540 data lines, 540 sent; sha256 ")
    assert "MISSING: 1 line(s): line 302 (missing at s3)" in text
    assert re.search(
        r"\nbronze_events +not checked  no bronze_events table yet: run the pipeline \(notebook 07\)\n", text
    )
    summary = read_summary(lab_env)
    assert (summary["ledger_missing"], summary["ledger_duplicated"]) == (1, 0)
    assert summary["ledger_hops"]["kinesis"] == 540 and summary["ledger_hops"]["s3"] == 539

    _, s3 = produced
    s3.put_object(
        Bucket=BUCKET,
        Key=DAY + "salud-firehose-tos3-1-c",
        Body=next(r.data for r in iter_records(SAMPLE_PATH) if r.line == 302),
    )  # the late delivery arrives
    printed.clear()
    assert cli.run_reconcile(dataset=str(SAMPLE_PATH), as_json=True, out=printed.append) == 0
    figures = json.loads(printed[0])
    assert figures["ledger_missing"] == 0 and figures["fates"] == {"in s3 (later hops not checked)": 540}
    assert read_summary(lab_env)["ledger_missing"] == 0


def test_reconcile_command_errors(lab_env, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER.replace(",Gender", "") + "\n" + GOOD + "\n")
    assert cli.run_reconcile(dataset=str(bad), out=print) == 2
    assert capsys.readouterr().err.startswith(
        "kinesis-lab: error: bad.csv: the header does not match the course's columns: missing column(s): Gender."
    )
    assert cli.run_reconcile(dataset=str(tmp_path / "nope.csv")) == 2
    assert "dataset file not found" in capsys.readouterr().err
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path / "no-stack-here"))  # stack not running, no tables
    assert cli.run_reconcile(dataset=str(SAMPLE_PATH)) == 2
    assert capsys.readouterr().err.strip() == (
        "kinesis-lab: error: nothing to check: no stream, no bucket and no pipeline tables "
        "(run the series first, or start the local stack)"
    )
    assert not (lab_env / "run-summary.json").exists()


def test_kinesis_lab_reconcile_command(produced, lab_env):
    done = subprocess.run(
        [sys.executable, "-m", "kinesis_lab.course.cli", "reconcile", "--dataset", str(SAMPLE_PATH)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert done.returncode == 1, done.stderr
    assert "MISSING: 1 line(s): line 302 (missing at s3)" in done.stdout
    assert read_summary(lab_env)["ledger_missing_at"] == {"s3": 1}
    bad = subprocess.run(
        [sys.executable, "-m", "kinesis_lab.course.cli", "reconcile", "--dataset", "/nonexistent.csv"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert bad.returncode == 2 and bad.stderr.startswith("kinesis-lab: error: dataset file not found")
