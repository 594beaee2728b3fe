"""Silver: typed, one row per event_id, checked against medallion.quality_rules().

``silver_checked`` (temporary view) holds every deduplicated row with the list of rules it breaks;
``silver.silver_events`` keeps the rows breaking none and ``silver.silver_quarantine`` the others, so
no row is silently dropped. On Databricks the same rules are also declared as warn-only expectations on the
view: the pipeline UI then shows pass/fail counts per rule, while the split is done by the filter.
Open-source Spark has no expectations API, hence the hasattr check.
"""

import medallion
from pyspark import pipelines as dp
from pyspark.sql import DataFrame


def with_expectations(query_function):
    """Warn-only expectations (rows are kept) where the runtime supports them."""
    if hasattr(dp, "expect_all"):
        return dp.expect_all(medallion.quality_rules())(query_function)
    return query_function


@dp.temporary_view(name="silver_checked")
@with_expectations
def silver_checked() -> DataFrame:
    bronze = spark.readStream.table("bronze.bronze_events")  # noqa: F821 - `spark` is injected by the pipeline
    return medallion.check_silver(bronze)


@dp.table(
    name="silver.silver_events",
    comment="Valid events: typed columns (Year int, rate and children double), one row per event_id.",
)
def silver_events() -> DataFrame:
    return medallion.valid_rows(spark.readStream.table("silver_checked"))  # noqa: F821


@dp.table(
    name="silver.silver_quarantine",
    comment="Rows breaking at least one quality rule: broken_rules, the raw line, what could be typed.",
)
def silver_quarantine() -> DataFrame:
    return medallion.quarantined_rows(spark.readStream.table("silver_checked"))  # noqa: F821
