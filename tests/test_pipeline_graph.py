"""The pipeline's dataflow graph, the way apache/spark tests pyspark.pipelines: each file of
databricks/pipeline/transformations/ (and the dev target's tests/) runs inside a local graph-element registry
(``graph_element_registration_context``), which records the outputs and flows the decorators register,
without a pipeline run. ``spark`` is a stand-in that answers ``spark.conf.get`` only; the flows' functions run
on a real Spark session where the test calls them. Databricks-only APIs (``dp.expect_all``,
``dp.expect_all_or_fail``) are given to ``dp`` by the test and record what they are given."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
import yaml
from databricks.bundles.pipelines import Pipeline
from pyspark import pipelines as dp
from pyspark.pipelines.graph_element_registry import GraphElementRegistry, graph_element_registration_context
from pyspark.pipelines.output import MaterializedView, StreamingTable, TemporaryView

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "databricks" / "pipeline"
CONF = {"lab.source_path": "s3://bucket/bronze/", "lab.source_mode": "autoloader"}


class LocalGraphElementRegistry(GraphElementRegistry):
    """What apache/spark's pyspark/pipelines/tests use: outputs and flows kept in lists."""

    def __init__(self):
        self.outputs, self.flows, self.sql = [], [], []

    def register_output(self, output) -> None:
        self.outputs.append(output)

    def register_flow(self, flow) -> None:
        self.flows.append(flow)

    def register_auto_cdc_flow(self, flow) -> None:
        self.flows.append(flow)

    def register_sql(self, sql_text: str, file_path: Path) -> None:
        self.sql.append((sql_text, file_path))


class ConfOnly:
    def __init__(self, conf: dict[str, str]):
        self.conf = self
        self._conf = conf

    def get(self, key: str, default: str | None = None):
        return self._conf.get(key, default)


@pytest.fixture
def graph(monkeypatch):
    """load(*files, conf=CONF, databricks=False) -> the registry after running those pipeline files; with
    ``databricks`` the expectation APIs exist on ``dp`` and record (kind, rules) in ``registry.expectations``."""
    monkeypatch.syspath_prepend(str(PIPELINE))  # the bundle's root_path: transformations import medallion

    def load(*files: Path, conf=CONF, databricks: bool = False, spark=None):
        registry = LocalGraphElementRegistry()
        registry.expectations = []
        if databricks:
            for kind in ("expect_all", "expect_all_or_fail"):
                def expect(rules, kind=kind):
                    registry.expectations.append((kind, dict(rules)))
                    return lambda function: function
                monkeypatch.setattr(dp, kind, expect, raising=False)
        with graph_element_registration_context(registry):
            for path in files:
                code = compile(path.read_text(), str(path), "exec")
                exec(code, {"spark": spark or ConfOnly(conf), "__name__": path.stem, "__file__": str(path)})
        return registry

    return load


def transformations() -> list[Path]:
    return sorted((PIPELINE / "transformations").glob("*.py"))


def test_open_source_spark_has_no_expectations_api():
    # why 02_silver.py checks hasattr: the expect_all branch runs on Databricks only
    assert not hasattr(dp, "expect_all") and not hasattr(dp, "expect_all_or_fail")


def test_outputs_and_flows_of_the_transformations(graph):
    registry = graph(*transformations())
    kinds = {o.name: type(o) for o in registry.outputs}
    assert kinds == {
        "bronze.bronze_events": StreamingTable,
        "silver_checked": TemporaryView,
        "silver.silver_events": StreamingTable,
        "silver.silver_quarantine": StreamingTable,
        **{f"gold.{name}": MaterializedView for name in (
            "gold_rate_by_region_year", "gold_aggregate_rates", "gold_top_countries_latest",
            "gold_gender_comparison", "gold_quarantine_by_rule")},
    }
    # every published table explains itself in the catalog (the temporary view is not published)
    assert all(o.comment for o in registry.outputs if not isinstance(o, TemporaryView))
    # one flow per output, named after it, writing into it
    assert sorted((f.name, f.target) for f in registry.flows) == sorted((name, name) for name in kinds)
    assert registry.expectations == [] and registry.sql == []  # open-source Spark: no expectations


def test_on_databricks_silver_declares_every_quality_rule_as_a_warn_only_expectation(graph):
    import medallion

    registry = graph(*transformations(), databricks=True)
    [(kind, rules)] = registry.expectations
    assert kind == "expect_all"  # warn only: the split into silver and quarantine is done by the filter
    assert rules == medallion.quality_rules() and len(rules) == 13 and "record_parsed" in rules
    assert "silver_checked" in {f.target for f in registry.flows}


def test_bronze_refuses_a_missing_source_path_or_an_unknown_mode(graph):
    bronze = PIPELINE / "transformations" / "01_bronze.py"
    with pytest.raises(ValueError, match="set lab.source_path in the pipeline configuration"):
        graph(bronze, conf={})
    registry = graph(bronze, conf={**CONF, "lab.source_mode": "kafka"})
    [flow] = registry.flows
    with pytest.raises(ValueError, match="lab.source_mode must be 'autoloader' or 'files', not 'kafka'"):
        flow.func()


# --- the dev target's in-pipeline test (dbdemos' pattern) ---------------------------------------------------
TESTS = sorted((PIPELINE / "tests").glob("*.py"))


def test_the_row_count_test_view_fails_the_update_unless_counts_reconcile(graph):
    registry = graph(*TESTS, databricks=True)
    [(kind, rules)] = registry.expectations
    assert kind == "expect_all_or_fail"
    assert rules == {"bronze_is_silver_quarantine_duplicates":
                     "bronze_rows = silver_rows + quarantine_rows + duplicate_rows"}
    assert [(type(o), o.name) for o in registry.outputs] == [(MaterializedView, "silver.test_row_counts")]


def test_the_row_counts_reconcile_on_real_rows(graph, spark_session):
    import medallion
    from test_medallion import bronze, record

    lines = [record(), record(), record(Year="N/A"), "not json"]
    first = record()
    lines.append(first)
    lines.append(first)  # a redelivery
    bronze_df = bronze(spark_session, *lines)
    checked = medallion.check_silver(bronze_df)
    tables = {"bronze.bronze_events": bronze_df, "silver.silver_events": medallion.valid_rows(checked),
              "silver.silver_quarantine": medallion.quarantined_rows(checked)}

    class Spark:
        class read:  # noqa: N801 - as spark.read
            table = staticmethod(tables.__getitem__)

    registry = graph(*TESTS, databricks=True, spark=Spark())
    [flow] = registry.flows
    row = flow.func().first().asDict()
    assert row == {"bronze_rows": 6, "silver_rows": 3, "quarantine_rows": 2, "duplicate_rows": 1}
    assert row["bronze_rows"] == row["silver_rows"] + row["quarantine_rows"] + row["duplicate_rows"]
    # a silver table that lost a row breaks the rule the expectation checks
    tables["silver.silver_events"] = tables["silver.silver_events"].limit(2)
    row = flow.func().first().asDict()
    assert row["bronze_rows"] != row["silver_rows"] + row["quarantine_rows"] + row["duplicate_rows"]


def test_the_dev_target_adds_the_tests_and_prod_does_not():
    bundle = yaml.safe_load((REPO / "databricks" / "databricks.yml").read_text())
    dev = bundle["targets"]["dev"]["resources"]["pipelines"]["kinesis_lab_pipeline"]
    Pipeline.from_dict(dev)  # a valid pipeline fragment (ValueError on an unknown field)
    [library] = dev["libraries"]
    matched = [Path(f) for f in glob.glob(str(REPO / "databricks" / library["glob"]["include"]), recursive=True)]
    assert sorted(p for p in matched if p.suffix == ".py") == TESTS and TESTS
    assert "resources" not in bundle["targets"]["prod"]
    local = yaml.safe_load((PIPELINE / "spark-pipeline.yml").read_text())
    assert [lib["glob"]["include"] for lib in local["libraries"]] == ["transformations/**"]  # no expectations API


def test_the_files_import_nothing_outside_the_pipeline_folder():
    for path in [*transformations(), *TESTS]:
        imports = {line.split()[1].split(".")[0] for line in path.read_text().splitlines()
                   if line.startswith(("import ", "from "))}
        assert imports <= {"medallion", "pyspark", "collections", "functools"}, (path.name, imports)
