"""`kinesis-lab demo` end to end: every notebook, in order, with papermill, on a private local stack.

One run: a real-like file (every row valid, WORLD and REGION aggregate rows, the shape of the real
Kaggle file) with 30 % injected throttling, through all eleven notebooks of the **Spanish edition**
(`make demo LAB_LANG=es`, notebooks/es), 99_teardown included. The Spanish notebooks hold the English code
cells and stored outputs (tests/test_translations.py), so one series proves both editions run, and the
English one's checked outputs are compared in tests/test_nbval.py.

The shipped sample's series runs once per `make test`, in `make nbval`: there every notebook's own
checks hold (04 sends 539 rows + 1 malformed line; 05 finds every record in S3 once; 07 bronze = S3;
08 silver + quarantine = 540, 8 quarantined; 09 the ledger and "every hop reconciles") and the checked
outputs match the committed ones. Throttling through the producer itself is in test_faults.py and
test_producer_stack.py; the line-level bad-input cases in test_bad_input.py and test_medallion.py.
"""

import contextlib
import io
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kinesis_lab.cloud import dataset
from kinesis_lab.cloud.summary import read_summary, summary_path
from kinesis_lab.course import demo
from kinesis_lab.local.pipeline import read_table, server_pids

GOLD_TABLES = {
    "gold_rate_by_region_year",
    "gold_aggregate_rates",
    "gold_top_countries_latest",
    "gold_gender_comparison",
    "gold_quarantine_by_rule",
}
AGGREGATE_CODES = {"WORLD", "REGION"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, private_stacks, pipeline_builds):
    """`kinesis-lab demo --lang es --dataset real_like.csv --simulated-failure-rate 0.3` (the CLI's run_demo, in
    this process; the notebooks run in their own kernels). 99_teardown deletes the pipeline's tables,
    so what the tests below read of them is taken just before it runs."""
    base = tmp_path_factory.mktemp("demo")
    csv_path = dataset.generate_synthetic_sample(base / "real_like.csv", rows=537, seed=14, aggregates=True)
    build = pipeline_builds(base / "build")
    private_stacks(build / "demo-stack")  # the demo's own stack: stopped at the end if it is not already
    before_teardown: dict = {}
    import papermill

    execute = papermill.execute_notebook

    def execute_notebook(input_path, output_path, **kwargs):
        if str(input_path).endswith("99_teardown.ipynb"):
            before_teardown["tables"] = {name: read_table(build, name) for name in GOLD_TABLES}
            before_teardown["figures"] = sorted(p.name for p in (build / "figures").glob("*.png"))
        return execute(input_path, output_path, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAB_BUILD_DIR", str(build))
        mp.setenv("LAB_STATE_DIR", str(build / "demo-stack"))  # run_demo sets it: restored afterwards
        mp.setenv("LAB_TARGET", "local")
        mp.setattr(papermill, "execute_notebook", execute_notebook)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = demo.run_demo(dataset=str(csv_path), simulated_failure_rate=0.3, lang="es")
    printed = out.getvalue()
    print(printed)
    assert code == 0, printed[-4000:]
    summary = read_summary(build)
    yield {"build": build, "csv": csv_path, "printed": printed, "summary": summary, **before_teardown}
    shutil.rmtree(base, ignore_errors=True)


def test_the_demo_runs_every_notebook_and_leaves_nothing_running(demo_run):
    build, s = demo_run["build"], demo_run["summary"]
    assert "every hop reconciles" in demo_run["printed"]
    expected = sorted(p.name for p in demo.series(REPO / "notebooks" / "es"))
    assert len(expected) == 11
    assert sorted(s["notebook_seconds"]) == expected  # 99_teardown included: it closed the run summary
    assert s["total_seconds"] == pytest.approx(sum(s["notebook_seconds"].values()), abs=0.5)
    assert sorted(p.name for p in (build / "notebooks").iterdir()) == expected
    assert "Qué vas a aprender" in (build / "notebooks" / "00_setup.ipynb").read_text(encoding="utf-8")  # the es edition
    assert summary_path(build).is_file()
    # nothing left running: the demo's private stack is down, its Spark server stopped
    assert not (build / "demo-stack" / "stack.json").exists()
    assert server_pids(build) == []


def test_throttled_records_are_resent_and_every_hop_reconciles(demo_run):
    s = demo_run["summary"]
    assert (s["csv_rows"], s["malformed_rows"]) == (537, 0)
    assert s["records_sent"] == s["s3_records"] == s["bronze_rows"] == 537
    assert s["records_retried"] > 0  # --simulated-failure-rate reached notebook 04
    assert s["missing_event_ids"] == 0 and s["s3_duplicate_event_ids"] == 0
    assert (s["silver_rows"], s["quarantine_rows"]) == (537, 0)
    assert s["quarantine_by_rule"] == {}
    assert (s["ledger_missing"], s["ledger_duplicated"], s["ledger_unchecked_hops"]) == (0, 0, [])
    assert (s["ledger_hops"]["silver"], s["ledger_hops"]["quarantine"]) == (537, 0)
    assert set(s["gold_tables"]) == GOLD_TABLES and s["gold_tables"]["gold_quarantine_by_rule"] == 0
    assert all(rows > 0 for name, rows in s["gold_tables"].items() if name != "gold_quarantine_by_rule")


def test_gold_keeps_the_published_aggregates_apart_from_the_countries(demo_run):
    tables = demo_run["tables"]
    assert tables["gold_quarantine_by_rule"].empty
    source = pd.read_csv(demo_run["csv"], dtype=str, keep_default_na=False)
    totals = source[source["Gender"] == "Total"]
    is_aggregate = totals["Country_Code"].isin(AGGREGATE_CODES)
    published, countries = totals[is_aggregate], totals[~is_aggregate]

    # the aggregate view holds every published aggregate, as published
    aggregates = tables["gold_aggregate_rates"]
    keys = ["Country", "Country_Code", "Region", "Year"]
    assert set(aggregates[keys].astype(str).itertuples(index=False, name=None)) == set(
        published[keys].itertuples(index=False, name=None)
    )
    assert set(aggregates["Country_Code"]) == AGGREGATE_CODES

    # the region view holds countries only: no Global, no region known only from its aggregate
    by_region = tables["gold_rate_by_region_year"]
    assert set(by_region["Region"]) == set(countries["Region"])
    assert not {"Global", dataset.AGGREGATE_ONLY_REGION} & set(by_region["Region"])
    expected_countries = countries.groupby(["Region", "Year"])["Country_Code"].nunique()
    got_countries = by_region.assign(Year=by_region["Year"].astype(str)).set_index(["Region", "Year"])["countries"]
    assert got_countries.sort_index().to_dict() == expected_countries.sort_index().to_dict()
    for name in ("gold_top_countries_latest", "gold_gender_comparison"):
        assert not AGGREGATE_CODES & set(tables[name]["Country_Code"]), name

    # notebook 09 draws the dashboard, the published aggregates included
    assert {"rate_by_region_year.png", "aggregate_rates.png"} <= set(demo_run["figures"])
