"""Unit tests of the pipeline logic (databricks/pipeline/medallion.py) on a local SparkSession."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "databricks" / "pipeline"))

import medallion  # noqa: E402

RULES = {
    "record_parsed",
    "event_id_present",
    "country_present",
    "country_code_present",
    "gender_present",
    "age_group_present",
    "gender_known",
    "year_is_integer",
    "year_in_range",
    "rate_is_number",
    "rate_in_range",
    "children_is_number",
    "children_non_negative",
}


@pytest.fixture(scope="module")
def spark(spark_session):
    return spark_session


_ids = iter(range(1, 10**6))


def record(**overrides) -> str:
    """One well-formed Firehose line; an override of None removes the field."""
    rec = {
        "Country": "Chad",
        "Country_Code": "TCD",
        "Region": "Sub-Saharan Africa",
        "Year": "2015",
        "Child_Labor_Rate_Percent": "38.2",
        "Estimated_Children_Millions": "2.41",
        "Gender": "Total",
        "Age_Group": "5-17 years",
        "event_id": f"00000000-0000-0000-0000-{next(_ids):012d}",
        "source_file": "child_labor.csv",
        "source_line": 2,
        "produced_at": "2026-11-26T01:02:03.123456+00:00",
    }
    rec.update(overrides)
    return json.dumps({k: v for k, v in rec.items() if v is not None})


def marker(**overrides) -> str:
    rec = {
        "event_id": f"00000000-0000-0000-0000-{next(_ids):012d}",
        "source_file": "child_labor.csv",
        "source_line": 7,
        "produced_at": "2026-11-26T01:02:03.123Z",
        "malformed": True,
        "error": "too many fields (9, expected 8)",
        "raw_line": 'Chad,TCD,"Sub-Saharan Africa",2015,38.2,2.41,Total,5-17 years,extra',
    }
    rec.update(overrides)
    return json.dumps(rec)


def bronze(spark, *lines: str, source_file: str = "file:/landing/bronze/ingestion_date=2026/11/26/part-1"):
    lines_df = spark.createDataFrame(
        [(line, source_file) for line in lines], "value string, _source_file string"
    )
    return medallion.parse_bronze(lines_df)


def checked(spark, *lines: str):
    return medallion.check_silver(bronze(spark, *lines))


def broken(spark, line: str) -> list[str]:
    rows = checked(spark, line).collect()
    assert len(rows) == 1
    return rows[0]["broken_rules"]


# --- bronze --------------------------------------------------------------------------------------
def test_parse_bronze_keeps_line_and_fields_as_text(spark):
    line = record(Child_Labor_Rate_Percent="12,5", Gender=" Boys ", source_line=41)
    row = bronze(spark, line).collect()[0]
    assert row["_raw_line"] == line
    assert row["_parse_ok"] is True
    assert row["Child_Labor_Rate_Percent"] == "12,5"
    assert row["Gender"] == " Boys "
    assert row["source_line"] == "41"  # numbers are kept as their text in bronze
    assert row["_source_file"].endswith("ingestion_date=2026/11/26/part-1")
    assert row["_ingested_at"] is not None
    assert tuple(bronze(spark, line).columns) == medallion.BRONZE_COLUMNS


@pytest.mark.parametrize(
    "line",
    [
        "Chad,TCD,Sub-Saharan Africa,2015,38.2,2.41,Total,5-17 years",  # a CSV line dropped in the prefix
        "not json at all",
        "[1, 2, 3]",
        "42",
        '{"event_id": "a", "Country": "Chad"',  # cut short
        record() + record(),  # two records glued together (no newline between them)
    ],
)
def test_parse_bronze_flags_lines_that_are_not_one_json_object(spark, line):
    rows = bronze(spark, line).collect()
    assert len(rows) == 1, "the line must still be kept in bronze"
    assert rows[0]["_parse_ok"] is False
    assert rows[0]["_raw_line"] == line


def test_parse_bronze_drops_blank_lines_only(spark):
    assert bronze(spark, record(), "", "   ", "garbage").count() == 2


def test_marker_record_is_parsed_json_with_its_fields(spark):
    row = bronze(spark, marker()).collect()[0]
    assert row["_parse_ok"] is True
    assert row["malformed"] == "true"
    assert row["error"].startswith("too many fields")
    assert row["raw_line"].startswith("Chad,TCD")


# --- silver typing -------------------------------------------------------------------------------
def test_silver_candidates_types_and_cleaning(spark):
    line = record(
        Country="  Chad ",
        Country_Code="tcd",
        Year=" 2015 ",
        Child_Labor_Rate_Percent="12,5",
        Estimated_Children_Millions=" 1.25",
        source_line=12,
    )
    df = medallion.to_silver_candidates(bronze(spark, line))
    types = dict(df.dtypes)
    assert types["Year"] == "int"
    assert types["Child_Labor_Rate_Percent"] == "double"
    assert types["Estimated_Children_Millions"] == "double"
    assert types["source_line"] == "int"
    assert types["produced_at"] == "timestamp"
    row = df.collect()[0]
    assert (row["Country"], row["Country_Code"], row["Year"]) == ("Chad", "TCD", 2015)
    assert row["Child_Labor_Rate_Percent"] == 12.5  # decimal comma accepted
    assert row["Estimated_Children_Millions"] == 1.25
    assert row["source_line"] == 12
    assert row["produced_at"] == dt.datetime(2026, 11, 26, 1, 2, 3, 123456)


def test_produced_at_with_z_suffix(spark):
    row = medallion.to_silver_candidates(
        bronze(spark, record(produced_at="2026-11-26T01:02:03.123Z"))
    ).first()
    assert row["produced_at"] == dt.datetime(2026, 11, 26, 1, 2, 3, 123000)


GENDER_CASES = [
    ("Total", "Total"),
    ("female", "Female"),
    (" Male ", "Male"),
    ("Boys", "Male"),
    ("BOYS", "Male"),
    ("girls", "Female"),
    (" Girls\t", "Female"),
    ("Other", "Other"),  # kept, so the quarantine shows it
    ("", None),
    ("N/A", None),
]


@pytest.fixture(scope="module")
def normalised_genders(spark):
    """raw Gender -> normalised, all cases in one Spark job."""
    lines = [record(Gender=raw, Country=f"case-{i}") for i, (raw, _) in enumerate(GENDER_CASES)]
    rows = medallion.to_silver_candidates(bronze(spark, *lines)).collect()
    by_case = {int(r["Country"].split("-")[1]): r["Gender"] for r in rows}
    return {raw: by_case[i] for i, (raw, _) in enumerate(GENDER_CASES)}


@pytest.mark.parametrize("raw, expected", GENDER_CASES)
def test_gender_normalisation(normalised_genders, raw, expected):
    assert normalised_genders[raw] == expected


BAD_NUMBERS = ["abc", "N/A", "", "1e400", "NaN", "Infinity", "12.5.1", "--3"]


def test_bad_numbers_become_null_without_raising_in_ansi_mode(spark):
    assert spark.conf.get("spark.sql.ansi.enabled") == "true"
    lines = [
        record(Year=bad, Child_Labor_Rate_Percent=bad, Estimated_Children_Millions=bad, source_line=bad)
        for bad in BAD_NUMBERS
    ]
    rows = medallion.to_silver_candidates(bronze(spark, *lines)).collect()
    assert len(rows) == len(BAD_NUMBERS)
    for row in rows:
        typed = (
            row["Year"],
            row["Child_Labor_Rate_Percent"],
            row["Estimated_Children_Millions"],
            row["source_line"],
        )
        assert typed == (None, None, None, None), row["_raw_line"]


def test_integer_overflow_becomes_null_without_raising(spark):
    line = record(Year="99999999999", source_line="99999999999", Child_Labor_Rate_Percent="99999999999")
    row = medallion.to_silver_candidates(bronze(spark, line)).first()
    assert (row["Year"], row["source_line"]) == (None, None)
    assert row["Child_Labor_Rate_Percent"] == 99999999999.0  # a valid double; rate_in_range rejects it


def test_fields_of_an_unparsed_line_are_not_trusted(spark):
    glued = record(event_id="glued-1") + record(event_id="glued-2")
    row = medallion.to_silver_candidates(bronze(spark, glued)).first()
    assert row["event_id"] is None and row["Country"] is None
    assert row["_record_parsed"] is False


# --- rules ---------------------------------------------------------------------------------------
def test_rule_names(spark):
    assert set(medallion.quality_rules()) == RULES


def test_rules_never_evaluate_to_null(spark):
    """Databricks expectations and broken_rules must agree, so no rule may be NULL on any row."""
    df = medallion.to_silver_candidates(bronze(spark, "{}", "junk", record(), marker()))
    from pyspark.sql import functions as F

    values = df.select(
        [F.expr(expr).alias(name) for name, expr in medallion.quality_rules().items()]
    ).collect()
    assert all(value is not None for row in values for value in row)


def test_valid_record_breaks_no_rule(spark):
    assert broken(spark, record()) == []


def test_boundaries_pass(spark):
    this_year = str(dt.datetime.now(dt.UTC).year)
    for line in (
        record(Year="1900", Child_Labor_Rate_Percent="0", Estimated_Children_Millions="0"),
        record(Year=this_year, Child_Labor_Rate_Percent="100", Estimated_Children_Millions="0.0"),
    ):
        assert broken(spark, line) == []


RULE_CASES = [
    ("record_parsed", marker()),
    ("record_parsed", "Chad,TCD,Africa,2015,38.2,2.41,Total,5-17 years"),
    ("record_parsed", "{not json"),
    ("event_id_present", record(event_id=None)),
    ("event_id_present", record(event_id="  ")),
    ("country_present", record(Country=" ")),
    ("country_present", record(Country=None)),
    ("country_code_present", record(Country_Code="N/A")),
    ("gender_present", record(Gender="")),
    ("age_group_present", record(Age_Group=None)),
    ("gender_known", record(Gender="Other")),
    ("year_in_range", record(Year="1899")),
    ("year_in_range", record(Year=str(dt.datetime.now(dt.UTC).year + 1))),
    ("year_is_integer", record(Year="N/A")),
    ("year_is_integer", record(Year="2015.5")),
    ("rate_in_range", record(Child_Labor_Rate_Percent="100.1")),
    ("rate_in_range", record(Child_Labor_Rate_Percent="-0.1")),
    ("rate_is_number", record(Child_Labor_Rate_Percent="N/A")),
    ("rate_is_number", record(Child_Labor_Rate_Percent="")),
    ("children_non_negative", record(Estimated_Children_Millions="-0.5")),
    ("children_is_number", record(Estimated_Children_Millions="N/A")),
]


@pytest.fixture(scope="module")
def broken_by_line(spark):
    """line -> its broken rules, every RULE_CASES line checked in one Spark job."""
    return {
        r["_raw_line"]: r["broken_rules"] for r in checked(spark, *(line for _, line in RULE_CASES)).collect()
    }


@pytest.mark.parametrize("rule, line", RULE_CASES)
def test_each_rule_alone(broken_by_line, rule, line):
    assert broken_by_line[line] == [rule]


def test_every_rule_is_described():
    table = medallion.rules_table()
    # one row per rule, in the order notebook 08 shows them (record first: a line that is no record breaks it only)
    assert [row["rule"] for row in table][:1] == ["record_parsed"] and {row["rule"] for row in table} == RULES
    assert len(table) == len(RULES) and set(medallion.RULE_DESCRIPTIONS) == RULES
    rules = medallion.quality_rules()
    for row in table:
        assert row["a good row"].strip() and row["a good row"] == medallion.RULE_DESCRIPTIONS[row["rule"]]
        # the condition shown is the one checked: on a parsed record the rule is exactly that condition
        expected = "_record_parsed" if row["rule"] == "record_parsed" else (
            f"NOT _record_parsed OR coalesce({row['SQL condition']}, false)")
        assert rules[row["rule"]] == expected, row["rule"]
    assert len({row["a good row"] for row in table}) == len(table)  # no description copied to another rule


def test_several_broken_rules_are_all_listed(spark):
    line = record(Country="", Year="1800", Child_Labor_Rate_Percent="250")
    assert sorted(broken(spark, line)) == ["country_present", "rate_in_range", "year_in_range"]


def test_valid_and_quarantined_rows_split_everything(spark):
    lines = [record(), record(Gender="Girls"), record(Year="N/A"), marker(), "junk line"]
    df = checked(spark, *lines)
    valid = medallion.valid_rows(df)
    quarantined = medallion.quarantined_rows(df)
    assert tuple(valid.columns) == medallion.SILVER_COLUMNS
    assert tuple(quarantined.columns) == medallion.QUARANTINE_COLUMNS
    assert valid.count() == 2
    rows = {r["_raw_line"]: r for r in quarantined.collect()}
    assert set(rows) == {lines[2], lines[3], lines[4]}
    assert rows[lines[2]]["broken_rules"] == ["year_is_integer"]
    assert rows[lines[3]]["broken_rules"] == ["record_parsed"]
    assert rows[lines[3]]["error"].startswith("too many fields")
    assert rows["junk line"]["broken_rules"] == ["record_parsed"]
    assert {r["Gender"] for r in valid.collect()} == {"Total", "Female"}


# --- dedup ---------------------------------------------------------------------------------------
def test_dedupe_drops_redelivered_event_ids_only(spark):
    redelivered = record(event_id="same-id")
    twin_a = record(event_id="twin-a", source_line=5)
    twin_b = record(event_id="twin-b", source_line=5)  # identical CSV row, another event: both stay
    df = medallion.dedupe_on_event_id(
        medallion.to_silver_candidates(bronze(spark, redelivered, redelivered, twin_a, twin_b))
    )
    assert sorted(r["event_id"] for r in df.collect()) == ["same-id", "twin-a", "twin-b"]


def test_dedupe_keeps_every_line_without_event_id(spark):
    df = medallion.dedupe_on_event_id(medallion.to_silver_candidates(bronze(spark, "junk", "junk", "{}")))
    assert df.count() == 3


def test_dedupe_of_malformed_markers_on_event_id(spark):
    again = marker(event_id="bad-1")
    assert medallion.quarantined_rows(checked(spark, again, again)).count() == 1


def test_dedupe_is_streaming_safe_across_micro_batches(spark, tmp_path):
    """Same pipeline as the silver tables, as a stream without watermark, in two runs."""
    landing, out, checkpoint = tmp_path / "landing", tmp_path / "silver", tmp_path / "checkpoint"
    landing.mkdir()

    def run_once():
        lines = spark.readStream.format("text").option("recursiveFileLookup", "true").load(str(landing))
        silver = medallion.valid_rows(
            medallion.check_silver(medallion.parse_bronze(medallion.with_source_file(lines)))
        )
        query = (
            silver.writeStream.format("parquet")
            .option("checkpointLocation", str(checkpoint))
            .trigger(availableNow=True)
            .start(str(out))
        )
        query.awaitTermination(120)
        assert query.exception() is None

    first = [record(event_id="e1"), record(event_id="e2"), record(event_id="e2")]
    (landing / "a.json").write_text("\n".join(first) + "\n")
    run_once()
    (landing / "b.json").write_text("\n".join([record(event_id="e2"), record(event_id="e3")]) + "\n")
    run_once()
    ids = sorted(r["event_id"] for r in spark.read.parquet(str(out)).collect())
    assert ids == ["e1", "e2", "e3"]


# --- gold ----------------------------------------------------------------------------------------
def silver_rows(spark, rows):
    """rows: (Country, Code, Region, Year, Gender, Age_Group, rate, children)."""
    lines = [
        record(
            Country=c,
            Country_Code=code,
            Region=region,
            Year=str(year),
            Gender=gender,
            Age_Group=age,
            Child_Labor_Rate_Percent=str(rate),
            Estimated_Children_Millions=str(children),
        )
        for c, code, region, year, gender, age, rate, children in rows
    ]
    return medallion.valid_rows(checked(spark, *lines))


GOLD_ROWS = [
    ("Chad", "TCD", "Africa", 2015, "Total", "5-17 years", 40.0, 2.0),
    ("Chad", "TCD", "Africa", 2019, "Total", "5-17 years", 30.0, 1.5),
    ("Chad", "TCD", "Africa", 2019, "Male", "5-17 years", 33.0, 0.8),
    ("Chad", "TCD", "Africa", 2019, "Female", "5-17 years", 27.0, 0.7),
    ("Mali", "MLI", "Africa", 2015, "Total", "5-17 years", 50.0, 3.0),
    ("Peru", "PER", "Americas", 2018, "Total", "5-17 years", 20.0, 1.0),
    ("World", "WORLD", "World", 2020, "Total", "5-17 years", 99.0, 160.0),
]


# the source's own aggregates: Country_Code REGION (Country = Region = the region's name) and WORLD
AGGREGATE_ROWS = [
    ("Africa", "REGION", "Africa", 2015, "Total", "5-17 years", 41.0, 20.0),
    ("Africa", "REGION", "Africa", 2015, "Female", "5-17 years", 39.0, 9.0),
    ("Africa", "REGION", "Africa", 2015, "Male", "5-17 years", 43.0, 11.0),
    ("Europe", "REGION", "Europe", 2015, "Total", "5-17 years", 4.0, 5.0),  # no country of its own
    ("Europe", "REGION", "Europe", 2015, "Total", "5-17 years", 4.5, 5.5),  # a revised figure
    ("World", "WORLD", "World", 2020, "Total", "5-17 years", 99.0, 160.0),
]
GOLD_VIEWS = {
    "rate_by_region_year": medallion.rate_by_region_year,
    "aggregate_rates": medallion.aggregate_rates,
    "top_countries_latest_rate": medallion.top_countries_latest_rate,
    "gender_comparison": medallion.gender_comparison,
}


def test_is_aggregate(spark):
    from pyspark.sql import functions as F

    codes = ["TCD", "WORLD", "REGION", "AB", "T1D", None]
    df = spark.createDataFrame([(c,) for c in codes], "Country_Code string")
    got = {r["Country_Code"]: r["aggregate"] for r in df.select("*", medallion.is_aggregate().alias("aggregate")).collect()}
    assert got == {"TCD": False, "WORLD": True, "REGION": True, "AB": True, "T1D": True, None: True}
    assert df.where(medallion.is_aggregate(F.lower("Country_Code"))).count() == len(codes)


def test_rate_by_region_year(spark):
    rows = {
        (r["Region"], r["Year"]): r
        for r in medallion.rate_by_region_year(silver_rows(spark, GOLD_ROWS + AGGREGATE_ROWS)).collect()
    }
    # countries only: no WORLD, no REGION rows, no region known only from its aggregate (Europe)
    assert set(rows) == {("Africa", 2015), ("Africa", 2019), ("Americas", 2018)}
    africa = rows[("Africa", 2015)]
    assert africa["avg_rate_percent"] == 45.0
    assert (africa["min_rate_percent"], africa["max_rate_percent"]) == (40.0, 50.0)
    assert africa["countries"] == 2
    assert africa["children_millions"] == 5.0
    assert rows[("Africa", 2019)]["rows"] == 1  # Male/Female rows are not counted twice


def test_aggregate_rates(spark):
    rows = {
        r["Country"]: r.asDict()
        for r in medallion.aggregate_rates(silver_rows(spark, GOLD_ROWS + AGGREGATE_ROWS)).collect()
    }
    assert set(rows) == {"Africa", "Europe", "World"}  # no country
    assert rows["Africa"] == {
        "Country": "Africa",
        "Country_Code": "REGION",
        "Region": "Africa",
        "Year": 2015,
        "Age_Group": "5-17 years",
        "rate_percent": 41.0,  # as published, not the mean of Chad and Mali (45.0)
        "children_millions": 20.0,
        "female_rate_percent": 39.0,
        "male_rate_percent": 43.0,
        "rows": 1,
    }
    europe = rows["Europe"]
    assert (europe["rate_percent"], europe["children_millions"], europe["rows"]) == (4.25, 5.25, 2)
    assert (europe["female_rate_percent"], europe["male_rate_percent"]) == (None, None)
    assert (rows["World"]["Country_Code"], rows["World"]["Year"]) == ("WORLD", 2020)


def test_aggregate_rates_needs_a_total_row(spark):
    split_only = [r for r in AGGREGATE_ROWS if r[0] == "Africa" and r[4] != "Total"]
    assert medallion.aggregate_rates(silver_rows(spark, split_only)).count() == 0


def test_silver_with_only_aggregate_rows(spark):
    silver = silver_rows(spark, AGGREGATE_ROWS)
    assert medallion.rate_by_region_year(silver).count() == 0
    assert medallion.top_countries_latest_rate(silver).count() == 0
    assert medallion.gender_comparison(silver).count() == 0  # Africa has both genders, but is no country
    assert medallion.aggregate_rates(silver).count() == 3


def test_empty_silver_gives_empty_gold_views(spark):
    silver = silver_rows(spark, [])
    assert silver.count() == 0
    for name, view in GOLD_VIEWS.items():
        assert view(silver).count() == 0, name
    quarantine = medallion.quarantined_rows(checked(spark))
    assert medallion.quarantine_by_rule(quarantine).collect() == []


def test_empty_quarantine_gives_no_rule_counts(spark):
    df = checked(spark, record(), record(Gender="Girls"))
    assert medallion.quarantined_rows(df).count() == 0
    counts = medallion.quarantine_by_rule(medallion.quarantined_rows(df))
    assert counts.collect() == [] and counts.columns == ["rule", "rows"]


def test_top_countries_latest_rate(spark):
    top = medallion.top_countries_latest_rate(silver_rows(spark, GOLD_ROWS), n=2).orderBy("rank").collect()
    assert [(r["rank"], r["Country_Code"], r["latest_year"], r["rate_percent"]) for r in top] == [
        (1, "MLI", 2015, 50.0),
        (2, "TCD", 2019, 30.0),  # Chad's latest year (2019), not its higher 2015 rate
    ]
    everyone = medallion.top_countries_latest_rate(silver_rows(spark, GOLD_ROWS + AGGREGATE_ROWS), n=10).collect()
    assert {r["Country_Code"] for r in everyone} == {"TCD", "MLI", "PER"}  # no WORLD, no REGION


def test_gender_comparison(spark):
    rows = medallion.gender_comparison(silver_rows(spark, GOLD_ROWS)).collect()
    assert len(rows) == 1
    chad = rows[0]
    assert (chad["Country"], chad["Year"], chad["Age_Group"]) == ("Chad", 2019, "5-17 years")
    assert (chad["female_rate_percent"], chad["male_rate_percent"]) == (27.0, 33.0)
    assert chad["gap_male_minus_female"] == 6.0
    # countries only: Africa's published female/male rates are in aggregate_rates
    with_aggregates = medallion.gender_comparison(silver_rows(spark, GOLD_ROWS + AGGREGATE_ROWS)).collect()
    assert [r["Country_Code"] for r in with_aggregates] == ["TCD"]


@pytest.mark.parametrize("gender", ["Total", "Male", "Female"])
def test_gender_comparison_with_one_gender_only(spark, gender):
    one_gender = [(*r[:4], gender, *r[5:]) for r in GOLD_ROWS]
    assert medallion.gender_comparison(silver_rows(spark, one_gender)).count() == 0


def test_quarantine_by_rule(spark):
    df = checked(spark, record(Year="1800"), record(Year="1800", Country=""), marker(), record())
    counts = {
        r["rule"]: r["rows"] for r in medallion.quarantine_by_rule(medallion.quarantined_rows(df)).collect()
    }
    assert counts == {"year_in_range": 2, "country_present": 1, "record_parsed": 1}


# --- whole CSV files: the producer's records through silver and gold (no AWS, no pipeline run) ---------
def produced(spark, path):
    """Silver's input for a CSV: the producer's records (one JSON line each), as Firehose lands them."""
    from kinesis_lab.cloud.records import iter_records

    lines = [r.data.decode("utf-8").rstrip("\n") for r in iter_records(path)]
    return checked(spark, *lines)


def test_csv_with_every_kind_of_bad_row(spark, tmp_path):
    """Each rule, once per row, through the producer: what the dirty-CSV demo checked."""
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
    df = produced(spark, csv_path)
    silver = medallion.valid_rows(df).collect()
    assert len(silver) == 4
    assert sorted(r["Gender"] for r in silver) == ["Female", "Male", "Total", "Total"]
    quarantine = medallion.quarantined_rows(df)
    assert quarantine.count() == 10
    # the producer gives every row an id; the CSV has no bad year or children that is not a number
    expected = {rule: 1 for rule in RULES - {"event_id_present", "year_is_integer", "children_is_number"}}
    assert {r["rule"]: r["rows"] for r in medallion.quarantine_by_rule(quarantine).collect()} == expected
    assert all(len(r["broken_rules"]) == 1 for r in quarantine.collect())


def test_real_like_csv_keeps_aggregates_apart(spark, tmp_path):
    """The real file's shape: every row valid, WORLD and REGION aggregate rows, one region that
    exists only as its aggregate."""
    import pandas as pd

    from kinesis_lab.cloud import dataset

    path = dataset.generate_synthetic_sample(tmp_path / "real_like.csv", rows=537, seed=14, aggregates=True)
    df = produced(spark, path)
    assert medallion.quarantined_rows(df).count() == 0
    silver = medallion.valid_rows(df)
    assert silver.count() == 537

    source = pd.read_csv(path, dtype=str, keep_default_na=False)
    published = source[source["Country_Code"].isin(["WORLD", "REGION"]) & (source["Gender"] == "Total")]
    expected = {(r.Country, r.Country_Code, r.Region, int(r.Year)) for r in published.itertuples()}
    aggregates = medallion.aggregate_rates(silver).collect()
    assert {(r["Country"], r["Country_Code"], r["Region"], r["Year"]) for r in aggregates} == expected
    assert dataset.AGGREGATE_ONLY_REGION in {r["Region"] for r in aggregates}

    countries = source[~source["Country_Code"].isin(["WORLD", "REGION"]) & (source["Gender"] == "Total")]
    by_region = {(r["Region"], r["Year"]): r for r in medallion.rate_by_region_year(silver).collect()}
    assert {region for region, _ in by_region} == set(countries["Region"])
    assert not {"Global", dataset.AGGREGATE_ONLY_REGION} & {region for region, _ in by_region}
    for (region, year), group in countries.groupby(["Region", "Year"]):
        assert by_region[(region, int(year))]["countries"] == group["Country_Code"].nunique()
    assert medallion.gender_comparison(silver).where(medallion.is_aggregate()).count() == 0
    top = medallion.top_countries_latest_rate(silver).collect()
    assert len(top) == 10 and not {"WORLD", "REGION"} & {r["Country_Code"] for r in top}


def test_sending_a_grown_file_again_adds_only_the_new_row_to_silver(spark, tmp_path):
    """The producer's ids depend on each row, not on the file: the earlier rows of a file with one row
    appended are redeliveries, and silver (de-duplicating on event_id) grows by exactly one."""
    from kinesis_lab.cloud.dataset import SAMPLE_PATH
    from kinesis_lab.cloud.records import iter_records

    grown = tmp_path / "grown.csv"
    grown.write_text(SAMPLE_PATH.read_text(encoding="utf-8")
                     + "Nepal,NPL,Asia and the Pacific,2024,9.9,0.80,Total,5-17 years\n", encoding="utf-8")
    first = [r.data.decode("utf-8").rstrip("\n") for r in iter_records(SAMPLE_PATH)]
    second = [r.data.decode("utf-8").rstrip("\n") for r in iter_records(grown)]
    assert [json.loads(a)["event_id"] for a in first] == [json.loads(b)["event_id"] for b in second[:-1]]
    once = medallion.valid_rows(checked(spark, *first)).count()
    both = medallion.valid_rows(checked(spark, *first, *second))
    assert both.count() == once + 1
    assert both.where("Year = 2024 AND Child_Labor_Rate_Percent = 9.9 AND Country = 'Nepal'").count() == 1


def test_the_pipeline_names_the_same_columns_as_the_package():
    """databricks/pipeline/ deploys without src/, so it declares the CSV's columns itself: they must stay equal."""
    from kinesis_lab.cloud.dataset import COLUMNS

    assert medallion.SOURCE_FIELDS == COLUMNS
