"""Gold: materialized views over silver (schema ``gold``), recomputed on each update.

Country figures and the source's own aggregates (WORLD, REGION rows) are kept apart:
medallion.is_aggregate tells them apart; gold_aggregate_rates shows the aggregates as published.
"""

import medallion
from pyspark import pipelines as dp
from pyspark.sql import DataFrame

TOP_COUNTRIES = 10


@dp.materialized_view(
    name="gold.gold_rate_by_region_year",
    comment="Per Region and Year (Gender = Total, countries only): mean, min, max rate; countries; children.",
)
def gold_rate_by_region_year() -> DataFrame:
    return medallion.rate_by_region_year(spark.read.table("silver.silver_events"))  # noqa: F821


@dp.materialized_view(
    name="gold.gold_aggregate_rates",
    comment="WORLD and regional aggregates as published: Total rate, children, female/male rates per Year.",
)
def gold_aggregate_rates() -> DataFrame:
    return medallion.aggregate_rates(spark.read.table("silver.silver_events"))  # noqa: F821


@dp.materialized_view(
    name="gold.gold_top_countries_latest",
    comment=f"The {TOP_COUNTRIES} countries with the highest child labour rate in their latest year.",
)
def gold_top_countries_latest() -> DataFrame:
    return medallion.top_countries_latest_rate(spark.read.table("silver.silver_events"), n=TOP_COUNTRIES)  # noqa: F821


@dp.materialized_view(
    name="gold.gold_gender_comparison",
    comment="Female vs male rate per Country, Year and Age_Group (countries only), and the gap.",
)
def gold_gender_comparison() -> DataFrame:
    return medallion.gender_comparison(spark.read.table("silver.silver_events"))  # noqa: F821


@dp.materialized_view(
    name="gold.gold_quarantine_by_rule",
    comment="How many quarantined rows break each quality rule.",
)
def gold_quarantine_by_rule() -> DataFrame:
    return medallion.quarantine_by_rule(spark.read.table("silver.silver_quarantine"))  # noqa: F821
