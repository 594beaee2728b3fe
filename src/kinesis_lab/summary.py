"""``build/run-summary.json``: the figures each notebook contributes, and the checks that they reconcile."""

from __future__ import annotations

import json
import os
from pathlib import Path


def summary_path(build_dir: Path) -> Path:
    return Path(build_dir) / "run-summary.json"


def read_summary(build_dir: Path) -> dict:
    path = summary_path(build_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def update_summary(build_dir: Path, **figures) -> dict:
    """Merge ``figures`` into the run summary (atomic write) and return the whole summary."""
    from kinesis_lab.local_pipeline import writable_folder

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
