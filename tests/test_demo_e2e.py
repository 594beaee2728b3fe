"""`kinesis-lab demo` end to end: every notebook, in order, with papermill, on a private local stack."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.spark]

RULES = {
    "record_parsed",
    "event_id_present",
    "country_present",
    "country_code_present",
    "gender_present",
    "age_group_present",
    "gender_known",
    "year_in_range",
    "rate_in_range",
    "children_non_negative",
}


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


def test_demo_on_the_shipped_sample_with_throttling_reconciles(tmp_path):
    out, s = run_demo(tmp_path / "build", "--simulated-failure-rate", "0.3")
    assert "every hop reconciles" in out
    assert s["csv_rows"] == 539 and s["malformed_rows"] == 1  # the sample's one malformed line
    assert s["records_sent"] == s["s3_records"] == s["bronze_rows"] == 540
    assert s["records_retried"] > 0
    assert s["missing_event_ids"] == 0 and s["s3_duplicate_event_ids"] == 0
    assert s["silver_rows"] + s["quarantine_rows"] == 540 and s["quarantine_rows"] == 8
    assert s["ledger_missing"] == 0 and s["ledger_duplicated"] == 0 and s["ledger_hops"]["quarantine"] == 8
    assert set(s["gold_tables"]) >= {
        "gold_rate_by_region_year",
        "gold_top_countries_latest",
        "gold_gender_comparison",
    }
    assert all(rows > 0 for name, rows in s["gold_tables"].items() if name != "gold_quarantine_by_rule")
    assert sorted(s["notebook_seconds"]) == sorted(
        p.name for p in (tmp_path / "build" / "notebooks").iterdir()
    )
    # nothing left running: the demo's private stack is down
    assert not (tmp_path / "build" / "demo-stack" / "stack.json").exists()


def test_demo_on_a_csv_with_every_kind_of_bad_row(tmp_path):
    csv_path = tmp_path / "dirty.csv"
    header = "Age_Group,Country,Country_Code,Region,Year,Child_Labor_Rate_Percent,Estimated_Children_Millions,Gender\n"
    good = "5-17 years,Nepal,NPL,Asia and the Pacific,2010,20.5,1.5,Total\n"
    rows = [
        good,
        good,  # identical rows: two facts, both stay
        "5-17 years,Peru,PER,Latin America and the Caribbean,2012,12.5,0.9, boys \n",  # trimmed + Boys -> Male
        '5-17 years,Peru,PER,Latin America and the Caribbean,2013,"12,5",0.9,Girls\n',  # decimal comma
        "5-17 years,,PER,Latin America and the Caribbean,2012,12.5,0.9,Total\n",  # country missing
        "5-17 years,Peru,,Latin America and the Caribbean,2012,12.5,0.9,Total\n",  # code missing
        "5-17 years,Peru,PER,Latin America and the Caribbean,2012,12.5,0.9,\n",  # gender missing
        ",Peru,PER,Latin America and the Caribbean,2012,12.5,0.9,Total\n",  # age group missing
        "5-17 years,Peru,PER,Latin America and the Caribbean,2012,12.5,0.9,Other\n",  # gender unknown
        "5-17 years,Peru,PER,Latin America and the Caribbean,1850,12.5,0.9,Total\n",  # year out of range
        "5-17 years,Peru,PER,Latin America and the Caribbean,2012,N/A,0.9,Total\n",  # rate missing
        "5-17 years,Peru,PER,Latin America and the Caribbean,2012,100.1,0.9,Total\n",  # rate out of range
        "5-17 years,Peru,PER,Latin America and the Caribbean,2012,12.5,-1,Total\n",  # children negative
        "5-17 years,Peru,PER,Latin America, and the Caribbean,2012,12.5,0.9,Total\n",  # 9 fields: malformed
    ]
    csv_path.write_text(header + "".join(rows), encoding="utf-8")
    _, s = run_demo(tmp_path / "build", "--dataset", str(csv_path))
    assert (s["csv_rows"], s["malformed_rows"]) == (13, 1)
    assert s["silver_rows"] == 4 and s["quarantine_rows"] == 10
    assert s["ledger_missing"] == 0 and s["ledger_duplicated"] == 0 and s["ledger_hops"]["quarantine"] == 10
    expected = {rule: 1 for rule in RULES - {"event_id_present"}}  # the producer gives every row an id
    expected["rate_in_range"] = 2  # N/A and 100.1
    assert s["quarantine_by_rule"] == expected
