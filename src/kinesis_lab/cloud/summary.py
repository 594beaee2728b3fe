"""``build/run-summary.json``: the figures each notebook contributes, and the checks that they reconcile."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

PREVIOUS_NAME = "previous-run-summary.json"


class DatasetMismatch(RuntimeError):
    """A notebook was asked to check another CSV than the one notebook 04 sent."""


def summary_path(build_dir: Path) -> Path:
    return Path(build_dir) / "run-summary.json"


def read_summary(build_dir: Path, previous: bool = False) -> dict:
    """The current run's figures (``previous=True``: the run that 99_teardown closed)."""
    path = Path(build_dir) / PREVIOUS_NAME if previous else summary_path(build_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def start_run(build_dir: Path, **figures) -> dict:
    """A new series starts (notebook 00): the figures of an earlier run are set aside, not mixed in."""
    end_run(build_dir)
    return update_summary(build_dir, run_started_at=datetime.now(UTC).isoformat(timespec="seconds"), **figures)


def end_run(build_dir: Path) -> Path | None:
    """Close the current run (99_teardown, or a new 00): its summary becomes ``previous-run-summary.json``."""
    path = summary_path(build_dir)
    if not path.is_file():
        return None
    previous = Path(build_dir) / PREVIOUS_NAME
    os.replace(path, previous)
    return previous


def _same_content(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    return digest[0] == digest[1]


def dataset_of_run(build_dir: Path, requested: str | Path | None = None, producing: bool = False) -> Path:
    """The CSV a notebook works on.

    ``producing`` (00 chooses, 04 sends): ``requested`` if given, else the one recorded for this run, else the
    shipped sample. Later notebooks (05-09) check what 04 sent: ``requested=None`` takes it from the run
    summary, and a different ``requested`` file is a :class:`DatasetMismatch`, not a slow delivery.
    """
    from kinesis_lab.cloud.dataset import DatasetError, load_dataset

    run = read_summary(build_dir)
    recorded = run.get("dataset_path")
    if requested not in (None, ""):
        chosen = load_dataset(requested)
        sent = "records_sent" in run and recorded
        if not producing and sent and Path(recorded).is_file() and not _same_content(chosen, Path(recorded)):
            raise DatasetMismatch(
                f"notebook 04 sent {Path(recorded).name} ({run['records_sent']} records), but this notebook was "
                f"asked to check {chosen.name}: leave dataset=None to check what was sent, or run 04 again "
                f"with dataset={str(requested)!r}")
        return chosen
    if recorded:
        if not Path(recorded).is_file():
            raise DatasetError(f"this run's dataset {recorded} is gone: give the notebook's dataset parameter, "
                               "or start the series again at 00")
        return Path(recorded)
    return load_dataset("sample")


def update_summary(build_dir: Path, **figures) -> dict:
    """Merge ``figures`` into the run summary (atomic write) and return the whole summary."""
    from kinesis_lab.cloud.config import writable_folder

    path = summary_path(build_dir)
    writable_folder(path.parent, build_dir)
    data = read_summary(build_dir)
    data.update(figures)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return data


def reconciliation_problems(s: dict) -> list[str]:
    """Each broken equality of the run, in words; empty when every hop reconciles.
    Only checks the hops whose figures are present (a partial series checks what it ran)."""
    problems = []

    def need(*keys):
        return all(k in s for k in keys)

    if need("records_sent", "csv_rows", "malformed_rows") and s["records_sent"] != s["csv_rows"] + s["malformed_rows"]:
        problems.append(f"records_sent {s['records_sent']} != csv_rows {s['csv_rows']} + malformed_rows {s['malformed_rows']}")
    if need("s3_records", "records_sent") and s["s3_records"] != s["records_sent"]:
        problems.append(f"s3_records {s['s3_records']} != records_sent {s['records_sent']}")
    for key in ("missing_event_ids", "s3_duplicate_event_ids", "ledger_missing", "ledger_duplicated"):
        if s.get(key):
            problems.append(f"{key} = {s[key]} (expected 0)")
    if need("bronze_rows", "s3_records") and s["bronze_rows"] != s["s3_records"]:
        problems.append(f"bronze_rows {s['bronze_rows']} != s3_records {s['s3_records']}")
    if need("silver_rows", "quarantine_rows", "csv_rows", "malformed_rows"):
        if s["silver_rows"] + s["quarantine_rows"] != s["csv_rows"] + s["malformed_rows"]:
            problems.append(f"silver_rows {s['silver_rows']} + quarantine_rows {s['quarantine_rows']} != "
                            f"csv_rows {s['csv_rows']} + malformed_rows {s['malformed_rows']}")
    return problems
