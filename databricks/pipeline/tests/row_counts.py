"""In-pipeline test (the bundle's dev target only): nothing is lost between bronze and silver.

dbdemos' declarative-pipeline unit-test pattern: a small view over the pipeline's own tables with an
``expect_or_fail`` expectation, so an update whose counts do not reconcile fails in the pipeline itself:
every bronze row is a silver row, a quarantined row, or a redelivery of an event already kept
(bronze = silver + quarantine + duplicates). Open-source Spark has no expectations API: the local run
(spark-pipeline.yml) does not include this folder; tests/test_pipeline_graph.py checks it.
"""

import medallion
from pyspark import pipelines as dp
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

ROW_COUNT_RULES = {"bronze_is_silver_quarantine_duplicates":
                   "bronze_rows = silver_rows + quarantine_rows + duplicate_rows"}


def row_counts(bronze: DataFrame, silver: DataFrame, quarantine: DataFrame) -> DataFrame:
    """One row: bronze_rows, silver_rows, quarantine_rows, duplicate_rows (bronze rows whose trusted event_id
    was seen before: what silver's dedup drops)."""
    ids = medallion.to_silver_candidates(bronze).agg(
        F.count("event_id").alias("with_id"), F.count_distinct("event_id").alias("distinct_ids"))
    return (bronze.agg(F.count(F.lit(1)).alias("bronze_rows"))
            .crossJoin(silver.agg(F.count(F.lit(1)).alias("silver_rows")))
            .crossJoin(quarantine.agg(F.count(F.lit(1)).alias("quarantine_rows")))
            .crossJoin(ids.select((F.col("with_id") - F.col("distinct_ids")).alias("duplicate_rows"))))


@dp.expect_all_or_fail(ROW_COUNT_RULES)
@dp.materialized_view(name="silver.test_row_counts",
                      comment="TEST (dev target only): bronze = silver + quarantine + duplicates, else the update fails.")
def test_row_counts() -> DataFrame:
    read = spark.read.table  # noqa: F821 - `spark` is injected by the pipeline
    return row_counts(read("bronze.bronze_events"), read("silver.silver_events"), read("silver.silver_quarantine"))
