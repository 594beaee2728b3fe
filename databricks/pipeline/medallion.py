"""The medallion logic as plain DataFrame -> DataFrame functions.

Bronze keeps every non-blank line that landed in S3; silver types and checks it; gold aggregates.
The files under ``transformations/`` only wire these functions into the pipeline, so they can be
unit-tested without a pipeline run and work the same on Databricks and on open-source Spark.
Everything here is streaming-safe (no actions, no ordering) unless it says it is batch only (gold).

Spark Connect caveats (open-source SDP 4.3 runs pipeline code through Spark Connect), found the hard
way: use ``select("*", expr.alias(name))`` rather than ``withColumn``, and ``select`` rather than
``drop``. ``drop`` analyses the plan while the pipeline is still registering its datasets and fails
(the upstream table does not exist yet); ``withColumn`` over a pipeline table that already exists
makes SDP read it as an external table, so the flow no longer waits for its upstream flow and
misses the rows that flow adds in the same run.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

# Fields of a well-formed record (the CSV columns, as strings) and of the producer's envelope.
SOURCE_FIELDS = (
    "Country",
    "Country_Code",
    "Region",
    "Year",
    "Child_Labor_Rate_Percent",
    "Estimated_Children_Millions",
    "Gender",
    "Age_Group",
)
ENVELOPE_FIELDS = ("event_id", "source_file", "source_line", "produced_at")
# Set by the producer on a CSV line it could not parse.
MARKER_FIELDS = ("malformed", "error", "raw_line")
CORRUPT_COLUMN = "_corrupt_record"

# Every field read as a string: Spark keeps any JSON value (number, boolean) as its text, so bronze
# never loses or rejects a value; typing happens in silver.
BRONZE_JSON_SCHEMA = ", ".join(
    f"`{name}` STRING" for name in (*SOURCE_FIELDS, *ENVELOPE_FIELDS, *MARKER_FIELDS, CORRUPT_COLUMN)
)

BRONZE_COLUMNS = (
    "_raw_line",
    *SOURCE_FIELDS,
    *ENVELOPE_FIELDS,
    *MARKER_FIELDS,
    "_parse_ok",
    "_source_file",
    "_ingested_at",
)
SILVER_COLUMNS = (*SOURCE_FIELDS, *ENVELOPE_FIELDS, "_source_file", "_ingested_at")
QUARANTINE_COLUMNS = (
    "event_id",
    "broken_rules",
    "error",
    "_raw_line",
    *SOURCE_FIELDS,
    "source_file",
    "source_line",
    "produced_at",
    "_source_file",
    "_ingested_at",
)

KNOWN_GENDERS = ("Total", "Female", "Male")
GENDER_SYNONYMS = {
    "total": "Total",
    "female": "Female",
    "girls": "Female",
    "girl": "Female",
    "male": "Male",
    "boys": "Male",
    "boy": "Male",
}
# Text values that mean "no value" in the source CSV (compared case-insensitively).
MISSING_MARKERS = ("", "n/a", "null", "none", "nan")
MIN_YEAR = 1900

# Rules that apply to a parsed record only: an unparsed line breaks "record_parsed" and nothing else,
# so the quarantine counts say what really went wrong.
_FIELD_RULES = {
    "event_id_present": "event_id IS NOT NULL",
    "country_present": "Country IS NOT NULL",
    "country_code_present": "Country_Code IS NOT NULL",
    "gender_present": "Gender IS NOT NULL",
    "age_group_present": "Age_Group IS NOT NULL",
    "gender_known": "Gender IS NULL OR Gender IN ('Total', 'Female', 'Male')",  # missing: gender_present
    # a number that is missing or not a number breaks "..._is_number" only; "..._in_range" judges numbers
    "year_is_integer": "Year IS NOT NULL",
    "year_in_range": f"Year IS NULL OR Year BETWEEN {MIN_YEAR} AND year(current_date())",
    "rate_is_number": "Child_Labor_Rate_Percent IS NOT NULL",
    "rate_in_range": "Child_Labor_Rate_Percent IS NULL OR Child_Labor_Rate_Percent BETWEEN 0 AND 100",
    "children_is_number": "Estimated_Children_Millions IS NOT NULL",
    "children_non_negative": "Estimated_Children_Millions IS NULL OR Estimated_Children_Millions >= 0",
}
# What each rule asks of a row, in words (notebook 08 shows them; a test keeps the keys equal to the rules').
RULE_DESCRIPTIONS = {
    "record_parsed": "the line is one JSON object, and the producer could parse its CSV row",
    "event_id_present": "it has an event_id",
    "country_present": "Country is not empty",
    "country_code_present": "Country_Code is not empty",
    "gender_present": "Gender is not empty",
    "age_group_present": "Age_Group is not empty",
    "gender_known": "Gender is Total, Female or Male (Boys/Girls are mapped first)",
    "year_is_integer": "Year is a whole number (not empty, not N/A, not 2015.5)",
    "year_in_range": f"Year is between {MIN_YEAR} and this year",
    "rate_is_number": "Child_Labor_Rate_Percent is a number (not empty, not N/A)",
    "rate_in_range": "Child_Labor_Rate_Percent is between 0 and 100",
    "children_is_number": "Estimated_Children_Millions is a number (not empty, not N/A)",
    "children_non_negative": "Estimated_Children_Millions is 0 or more",
}


# --- bronze ---------------------------------------------------------------------------------------
def with_source_file(text_df: DataFrame) -> DataFrame:
    """``value`` + ``_source_file`` from a file-source DataFrame (text reader or Auto Loader), using
    the ``_metadata`` column (works in streaming and on Unity Catalog, unlike input_file_name())."""
    return text_df.select("value", F.col("_metadata.file_path").alias("_source_file"))


def parse_bronze(lines_df: DataFrame) -> DataFrame:
    """One bronze row per non-blank line: the raw line, every JSON field as a string, ``_parse_ok``.

    ``lines_df`` has ``value`` (one line of a file) and ``_source_file`` (see with_source_file).
    A line is parsed when it is exactly one JSON object: not JSON at all, a JSON array or scalar, or
    two objects glued together (records sent without a trailing newline) give ``_parse_ok = false``,
    and the line is still kept. Blank lines carry nothing and are dropped.
    """
    raw = F.col("value")
    parsed = F.from_json(raw, BRONZE_JSON_SCHEMA, {"columnNameOfCorruptRecord": CORRUPT_COLUMN})
    stripped = F.trim(raw)
    single_object = (
        stripped.startswith("{") & stripped.endswith("}") & ~stripped.rlike(r'\}\s*\{"')
    )  # a `}{"` outside a JSON string only appears between concatenated objects
    fields = [parsed[name].alias(name) for name in (*SOURCE_FIELDS, *ENVELOPE_FIELDS, *MARKER_FIELDS)]
    return lines_df.where(F.trim(raw) != "").select(
        raw.alias("_raw_line"),
        *fields,
        (parsed[CORRUPT_COLUMN].isNull() & single_object).alias("_parse_ok"),
        F.col("_source_file"),
        F.current_timestamp().alias("_ingested_at"),
    )


# --- silver ---------------------------------------------------------------------------------------
def _clean_text(col: Column) -> Column:
    """Trimmed (any whitespace), None for empty or a missing marker such as "N/A"."""
    trimmed = F.regexp_replace(col, r"^\s+|\s+$", "")
    return F.when(F.lower(trimmed).isin(*MISSING_MARKERS), F.lit(None)).otherwise(trimmed)


def _to_double(col: Column) -> Column:
    """A plain decimal number ("12.5", a decimal comma "12,5" too) as double, else None.
    NaN/Infinity/"1e3"/"N/A" are not numbers here; try_cast keeps ANSI mode from raising."""
    text = _clean_text(col)
    text = F.when(text.rlike(r"^[+-]?\d+,\d+$"), F.regexp_replace(text, ",", ".")).otherwise(text)
    return F.when(text.rlike(r"^[+-]?(\d+(\.\d*)?|\.\d+)$"), text.try_cast("double"))


def _to_int(col: Column) -> Column:
    text = _clean_text(col)
    return F.when(text.rlike(r"^[+-]?\d+$"), text.try_cast("int"))


def normalise_gender(col: Column) -> Column:
    """Total / Female / Male (Girls -> Female, Boys -> Male, any case); an unknown value is kept
    trimmed so the quarantine shows it; empty -> None."""
    text = _clean_text(col)
    mapped = F.lit(None).cast("string")
    for synonym, gender in GENDER_SYNONYMS.items():
        mapped = F.when(F.lower(text) == synonym, F.lit(gender)).otherwise(mapped)
    return F.coalesce(mapped, text)


def to_silver_candidates(bronze_df: DataFrame) -> DataFrame:
    """Typed, trimmed, normalised columns (nothing dropped yet) + what the rules and the quarantine need."""
    parse_ok = F.coalesce(F.col("_parse_ok"), F.lit(False))

    def c(name: str) -> Column:
        # fields of a line that is not one JSON object are not trusted (not even its event_id)
        return F.when(parse_ok, F.col(name))

    malformed = F.coalesce(F.lower(F.trim(c("malformed"))) == "true", F.lit(False))
    return bronze_df.select(
        _clean_text(c("Country")).alias("Country"),
        F.upper(_clean_text(c("Country_Code"))).alias("Country_Code"),
        _clean_text(c("Region")).alias("Region"),
        _to_int(c("Year")).alias("Year"),
        _to_double(c("Child_Labor_Rate_Percent")).alias("Child_Labor_Rate_Percent"),
        _to_double(c("Estimated_Children_Millions")).alias("Estimated_Children_Millions"),
        normalise_gender(c("Gender")).alias("Gender"),
        _clean_text(c("Age_Group")).alias("Age_Group"),
        _clean_text(c("event_id")).alias("event_id"),
        _clean_text(c("source_file")).alias("source_file"),
        _to_int(c("source_line")).alias("source_line"),
        _clean_text(c("produced_at")).try_cast("timestamp").alias("produced_at"),
        (parse_ok & ~malformed).alias("_record_parsed"),
        c("error").alias("error"),
        F.col("_raw_line"),
        F.col("_source_file"),
        F.col("_ingested_at"),
    )


def quality_rules() -> dict[str, str]:
    """Rule name -> SQL boolean expression over to_silver_candidates' columns; true = the row passes.

    Never NULL (so Databricks expectations and with_rule_violations agree). Field rules pass on an
    unparsed record: it breaks "record_parsed" only.
    """
    rules = {"record_parsed": "_record_parsed"}
    for name, condition in _FIELD_RULES.items():
        rules[name] = f"NOT _record_parsed OR coalesce({condition}, false)"
    return rules


def rules_table() -> list[dict[str, str]]:
    """Each rule with what a good row meets, in words and as the SQL condition on a parsed record."""
    conditions = {"record_parsed": "_record_parsed", **_FIELD_RULES}
    return [{"rule": name, "a good row": RULE_DESCRIPTIONS[name], "SQL condition": conditions[name]}
            for name in quality_rules()]


def with_rule_violations(candidates_df: DataFrame) -> DataFrame:
    """Adds ``broken_rules``: array<string> of the names of the rules the row breaks (empty = valid)."""
    checks = [F.when(~F.expr(expression), F.lit(name)) for name, expression in quality_rules().items()]
    broken_rules = F.filter(F.array(*checks), lambda name: name.isNotNull())
    return candidates_df.select("*", broken_rules.alias("broken_rules"))


def valid_rows(checked_df: DataFrame) -> DataFrame:
    """Rows breaking no rule, with the silver columns only."""
    return checked_df.where(F.size("broken_rules") == 0).select(*SILVER_COLUMNS)


def quarantined_rows(checked_df: DataFrame) -> DataFrame:
    """Rows breaking at least one rule: the broken rules, the raw line, what could be typed."""
    return checked_df.where(F.size("broken_rules") > 0).select(*QUARANTINE_COLUMNS)


def dedupe_on_event_id(df: DataFrame) -> DataFrame:
    """One row per event_id: drops redeliveries of the same event (Kinesis/Firehose are at-least-once).

    Identical CSV rows carry different event_ids and all stay. Rows without an event_id (lines that
    are not JSON) are never merged: they are not duplicates of anything.

    Streaming: ``dropDuplicates`` without a watermark keeps every seen event_id in the checkpoint's
    state store, for ever. That is what we want here (a redelivery can come any time later, and the
    course data is small), it runs in a streaming table in open-source SDP 4.3 and on Databricks.
    ``dropDuplicatesWithinWatermark`` would bound the state but needs ``withWatermark``, which fails
    on a pipeline table in SDP 4.3 and would forget ids older than the watermark delay.
    """
    with_id = df.where(F.col("event_id").isNotNull()).dropDuplicates(["event_id"])
    return with_id.unionByName(df.where(F.col("event_id").isNull()))


def check_silver(bronze_df: DataFrame) -> DataFrame:
    """bronze -> typed, one row per event, with ``broken_rules``: the input of both silver tables."""
    return with_rule_violations(dedupe_on_event_id(to_silver_candidates(bronze_df)))


# --- gold (batch: materialized views) -------------------------------------------------------------
# A country row has a three-letter ISO code. Anything else is an aggregate the source publishes:
# WORLD (Region "Global") and REGION (Country = the region's name, Region = that region).
COUNTRY_CODE_PATTERN = r"^[A-Z]{3}$"


def is_aggregate(code: Column | None = None) -> Column:
    """True for an aggregate row (Country_Code not a three-letter ISO code: WORLD, REGION, ...).
    The one place that tells aggregates from countries; a NULL code counts as an aggregate."""
    code = F.col("Country_Code") if code is None else code
    return ~F.coalesce(code.rlike(COUNTRY_CODE_PATTERN), F.lit(False))


def _countries(silver_df: DataFrame) -> DataFrame:
    return silver_df.where(~is_aggregate())


def _aggregates(silver_df: DataFrame) -> DataFrame:
    return silver_df.where(is_aggregate())


def _totals(silver_df: DataFrame) -> DataFrame:
    """Rows for both genders together: Male/Female rows are split views of the same children."""
    return silver_df.where(F.col("Gender") == "Total")


def rate_by_region_year(silver_df: DataFrame) -> DataFrame:
    """Per Region and Year (Gender = Total, countries only): mean/min/max rate, countries, children.

    Aggregate rows (WORLD, REGION) are left out: averaging a region's published figure with its
    countries would count it as one more country. A region the source gives only as its aggregate
    has no row here; its figures are in aggregate_rates."""
    return (
        _totals(_countries(silver_df))
        .groupBy("Region", "Year")
        .agg(
            F.round(F.avg("Child_Labor_Rate_Percent"), 2).alias("avg_rate_percent"),
            F.min("Child_Labor_Rate_Percent").alias("min_rate_percent"),
            F.max("Child_Labor_Rate_Percent").alias("max_rate_percent"),
            F.countDistinct("Country_Code").alias("countries"),
            F.round(F.sum("Estimated_Children_Millions"), 3).alias("children_millions"),
            F.count(F.lit(1)).alias("rows"),
        )
    )


def aggregate_rates(silver_df: DataFrame) -> DataFrame:
    """The aggregates' own figures, as the source publishes them (nothing recomputed from countries):
    per aggregate (Country, Country_Code, Region), Year and Age_Group with a Total row: its rate and
    children, and its female/male rates when published (else NULL). ``rows``: Total rows averaged
    (more than 1 when the source repeats or revises the figure)."""
    rate, gender = F.col("Child_Labor_Rate_Percent"), F.col("Gender")
    return (
        _aggregates(silver_df)
        .groupBy("Country", "Country_Code", "Region", "Year", "Age_Group")
        .agg(
            F.round(F.avg(F.when(gender == "Total", rate)), 2).alias("rate_percent"),
            F.round(F.avg(F.when(gender == "Total", F.col("Estimated_Children_Millions"))), 3).alias(
                "children_millions"
            ),
            F.round(F.avg(F.when(gender == "Female", rate)), 2).alias("female_rate_percent"),
            F.round(F.avg(F.when(gender == "Male", rate)), 2).alias("male_rate_percent"),
            F.count(F.when(gender == "Total", F.lit(1))).alias("rows"),
        )
        .where(F.col("rows") > 0)
    )


def latest_rate_by_country(silver_df: DataFrame) -> DataFrame:
    """Per country (aggregates left out) its latest Year (Gender = Total), with the mean rate and
    children of that year (mean over age groups and repeated rows)."""
    per_year = (
        _totals(_countries(silver_df))
        .groupBy("Country", "Country_Code", "Region", "Year")
        .agg(
            F.avg("Child_Labor_Rate_Percent").alias("rate_percent"),
            F.avg("Estimated_Children_Millions").alias("children_millions"),
        )
    )
    newest_first = Window.partitionBy("Country_Code").orderBy(F.col("Year").desc(), F.col("Country"))
    return (
        per_year.select("*", F.row_number().over(newest_first).alias("_pick"))
        .where(F.col("_pick") == 1)
        .select("Country", "Country_Code", "Region", "Year", "rate_percent", "children_millions")
    )


def top_countries_latest_rate(silver_df: DataFrame, n: int = 10) -> DataFrame:
    """The ``n`` countries with the highest rate in their latest year, ``rank`` 1 = highest.
    Aggregates (WORLD, REGION) are left out."""
    countries = latest_rate_by_country(silver_df)
    highest_first = Window.orderBy(F.col("rate_percent").desc(), F.col("Country"))
    return (
        countries.select("*", F.row_number().over(highest_first).alias("rank"))
        .where(F.col("rank") <= n)
        .select(
            "rank",
            "Country",
            "Country_Code",
            "Region",
            F.col("Year").alias("latest_year"),
            F.round("rate_percent", 2).alias("rate_percent"),
            F.round("children_millions", 3).alias("children_millions"),
        )
    )


def gender_comparison(silver_df: DataFrame) -> DataFrame:
    """Per Country, Year and Age_Group: Female and Male rates side by side and the gap (male - female).
    Only rows where both genders are known, and countries only: an aggregate is not one more point
    among countries (its female/male rates are in aggregate_rates)."""
    pivoted = (
        _countries(silver_df)
        .where(F.col("Gender").isin("Female", "Male"))
        .groupBy("Country", "Country_Code", "Region", "Year", "Age_Group")
        .pivot("Gender", ["Female", "Male"])
        .agg(F.avg("Child_Labor_Rate_Percent"))
    )
    return pivoted.where(F.col("Female").isNotNull() & F.col("Male").isNotNull()).select(
        "Country",
        "Country_Code",
        "Region",
        "Year",
        "Age_Group",
        F.round("Female", 2).alias("female_rate_percent"),
        F.round("Male", 2).alias("male_rate_percent"),
        F.round(F.col("Male") - F.col("Female"), 2).alias("gap_male_minus_female"),
    )


def quarantine_by_rule(quarantine_df: DataFrame) -> DataFrame:
    """How many quarantined rows break each rule (a row breaking two rules counts for both)."""
    return (
        quarantine_df.select(F.explode("broken_rules").alias("rule"))
        .groupBy("rule")
        .agg(F.count(F.lit(1)).alias("rows"))
    )
