"""`kinesis-lab demo` end to end: every notebook, in order, with papermill, on a private local stack.

Two runs: the shipped sample (dirty rows, throttling) and a real-like file (every row valid, WORLD and
REGION aggregate rows). The line-level bad-input cases are in test_bad_input.py and test_medallion.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kinesis_lab import dataset
from kinesis_lab.demo import series
from kinesis_lab.local_pipeline import read_table

pytestmark = [pytest.mark.notebooks, pytest.mark.spark]

REPO = Path(__file__).resolve().parents[1]
GOLD_TABLES = {
    "gold_rate_by_region_year",
    "gold_aggregate_rates",
    "gold_top_countries_latest",
    "gold_gender_comparison",
    "gold_quarantine_by_rule",
}
AGGREGATE_CODES = {"WORLD", "REGION"}


def run_demo(build_dir, *args):
    env = {**os.environ, "LAB_BUILD_DIR": str(build_dir)}
    env.pop("LAB_STATE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "kinesis_lab.cli", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout, json.loads((build_dir / "run-summary.json").read_text())


def assert_every_notebook_ran(build_dir, s, but=()):
    expected = sorted(p.name for p in series(REPO / "notebooks") if p.stem[:2] not in but)
    assert sorted(s["notebook_seconds"]) == expected
    assert sorted(p.name for p in (build_dir / "notebooks").iterdir()) == expected
    # nothing left running: the demo's private stack is down
    assert not (build_dir / "demo-stack" / "stack.json").exists()


def test_demo_on_the_shipped_sample_with_throttling_reconciles(tmp_path):
    build = tmp_path / "build"
    out, s = run_demo(build, "--simulated-failure-rate", "0.3")
    assert "every hop reconciles" in out
    assert_every_notebook_ran(build, s)
    assert s["csv_rows"] == 539 and s["malformed_rows"] == 1  # the sample's one malformed line
    assert s["records_sent"] == s["s3_records"] == s["bronze_rows"] == 540
    assert s["records_retried"] > 0
    assert s["missing_event_ids"] == 0 and s["s3_duplicate_event_ids"] == 0
    assert s["silver_rows"] + s["quarantine_rows"] == 540 and s["quarantine_rows"] == 8
    assert s["ledger_missing"] == 0 and s["ledger_duplicated"] == 0 and s["ledger_hops"]["quarantine"] == 8
    assert set(s["gold_tables"]) == GOLD_TABLES
    assert all(rows > 0 for rows in s["gold_tables"].values())


def test_demo_on_a_real_like_csv_with_aggregate_rows(tmp_path):
    """The real Kaggle file's shape: nothing to quarantine, and aggregates kept apart from countries."""
    csv_path = dataset.generate_synthetic_sample(tmp_path / "real_like.csv", rows=537, seed=14, aggregates=True)
    build = tmp_path / "build"
    # every notebook but 99_teardown, which deletes the tables read below (the sample's demo runs it)
    through_09 = [p.stem[:2] for p in series(REPO / "notebooks") if p.stem[:2] != "99"]
    out, s = run_demo(build, "--dataset", str(csv_path), "--notebooks", *through_09)
    assert "every hop reconciles" in out
    assert_every_notebook_ran(build, s, but=("99",))
    assert (s["csv_rows"], s["malformed_rows"]) == (537, 0)
    assert (s["silver_rows"], s["quarantine_rows"]) == (537, 0)
    assert s["quarantine_by_rule"] == {}
    assert set(s["gold_tables"]) == GOLD_TABLES and s["gold_tables"]["gold_quarantine_by_rule"] == 0
    assert read_table(build, "gold_quarantine_by_rule").empty
    assert (s["ledger_missing"], s["ledger_duplicated"], s["ledger_unchecked_hops"]) == (0, 0, [])
    assert (s["ledger_hops"]["silver"], s["ledger_hops"]["quarantine"]) == (537, 0)

    source = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    totals = source[source["Gender"] == "Total"]
    is_aggregate = totals["Country_Code"].isin(AGGREGATE_CODES)
    published, countries = totals[is_aggregate], totals[~is_aggregate]

    # the aggregate view holds every published aggregate, as published
    aggregates = read_table(build, "gold_aggregate_rates")
    keys = ["Country", "Country_Code", "Region", "Year"]
    assert set(aggregates[keys].astype(str).itertuples(index=False, name=None)) == set(
        published[keys].itertuples(index=False, name=None)
    )
    assert set(aggregates["Country_Code"]) == AGGREGATE_CODES

    # the region view holds countries only: no Global, no region known only from its aggregate
    by_region = read_table(build, "gold_rate_by_region_year")
    assert set(by_region["Region"]) == set(countries["Region"])
    assert not {"Global", dataset.AGGREGATE_ONLY_REGION} & set(by_region["Region"])
    expected_countries = countries.groupby(["Region", "Year"])["Country_Code"].nunique()
    got_countries = by_region.assign(Year=by_region["Year"].astype(str)).set_index(["Region", "Year"])["countries"]
    assert got_countries.sort_index().to_dict() == expected_countries.sort_index().to_dict()
    for name in ("gold_top_countries_latest", "gold_gender_comparison"):
        assert not AGGREGATE_CODES & set(read_table(build, name)["Country_Code"]), name

    # notebook 09 draws the dashboard, the published aggregates included
    drawn = {p.name for p in (build / "figures").glob("*.png")}
    assert {"rate_by_region_year.png", "aggregate_rates.png"} <= drawn
