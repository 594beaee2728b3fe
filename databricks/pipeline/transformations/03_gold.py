"""Gold: materialized views over silver (schema ``gold``), recomputed on each update.

Country figures and the source's own aggregates (WORLD, REGION rows) are kept apart:
medallion.is_aggregate tells them apart; gold_aggregate_rates shows the aggregates as published.
"""

from collections.abc import Callable
from functools import partial

import medallion
from pyspark import pipelines as dp
from pyspark.sql import DataFrame

TOP_COUNTRIES = 10


def gold_view(name: str, comment: str, build: Callable[[DataFrame], DataFrame], source: str = "silver.silver_events"):
    """Wire ``build`` (a medallion function of one silver table) as the materialized view ``gold.<name>``."""

    @dp.materialized_view(name=f"gold.{name}", comment=comment)
    def view() -> DataFrame:
        return build(spark.read.table(source))  # noqa: F821 - spark is given to pipeline files

    return view


gold_view("gold_rate_by_region_year", "Per Region and Year (Gender = Total, countries only): mean, min, max rate; "
          "countries; children.", medallion.rate_by_region_year)
gold_view("gold_aggregate_rates", "WORLD and regional aggregates as published: Total rate, children, female/male "
          "rates per Year.", medallion.aggregate_rates)
gold_view("gold_top_countries_latest", f"The {TOP_COUNTRIES} countries with the highest child labour rate in their "
          "latest year.", partial(medallion.top_countries_latest_rate, n=TOP_COUNTRIES))
gold_view("gold_gender_comparison", "Female vs male rate per Country, Year and Age_Group (countries only), and the "
          "gap.", medallion.gender_comparison)
gold_view("gold_quarantine_by_rule", "How many quarantined rows break each quality rule.",
          medallion.quarantine_by_rule, source="silver.silver_quarantine")
