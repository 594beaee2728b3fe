"""The notebooks' charts (kinesis_lab.course.figures): empty frames, one row, one category, readable ticks."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from kinesis_lab.course import figures  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def drawn(ax):
    ax.figure.canvas.draw()  # tick labels and positions are set on draw
    return ax


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def tick_texts(labels) -> list[str]:
    return [t.get_text() for t in labels if t.get_text()]


def assert_integer_ticks(axis_labels, ticks):
    shown = tick_texts(axis_labels)
    assert shown, "no tick labels"
    assert all(text.replace("\u2212", "-").lstrip("-").isdigit() for text in shown), shown
    assert all(float(t).is_integer() for t in ticks), ticks


def assert_no_overlap(labels):
    boxes = [t.get_window_extent() for t in labels if t.get_text()]
    for a, b in zip(boxes, boxes[1:], strict=False):
        assert not a.overlaps(b), (a, b)


# (function, empty frame with the table's columns, message)
EMPTY_CASES = [
    (figures.records_per_shard, pd.DataFrame(columns=["shard", "records"]), figures.NO_SHARDS),
    (figures.quarantine_by_rule, pd.DataFrame(columns=["rule", "rows"]), figures.NOTHING_QUARANTINED),
    (figures.quarantine_by_rule, pd.DataFrame(columns=["event_id", "broken_rules"]), figures.NOTHING_QUARANTINED),
    (
        figures.rate_by_region_year,
        pd.DataFrame(columns=["Region", "Year", "avg_rate_percent"]),
        figures.NO_REGION_RATES,
    ),
    (figures.top_countries_latest, pd.DataFrame(columns=["rank", "Country", "rate_percent"]), figures.NO_TOP_COUNTRIES),
    (
        figures.gender_scatter,
        pd.DataFrame(columns=["female_rate_percent", "male_rate_percent"]),
        figures.NO_GENDER_PAIRS,
    ),
    (figures.aggregate_rates, pd.DataFrame(columns=["Country", "Year", "rate_percent"]), figures.NO_AGGREGATES),
]


@pytest.mark.parametrize("draw, frame, message", EMPTY_CASES, ids=lambda c: getattr(c, "__name__", None))
def test_empty_frame_draws_the_message(draw, frame, message, tmp_path):
    ax = drawn(draw(frame, save_to=tmp_path / "empty.png"))
    assert message in texts(ax)
    assert ax.get_title()
    assert (tmp_path / "empty.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("draw, _, message", EMPTY_CASES, ids=lambda c: getattr(c, "__name__", None))
def test_frame_without_columns_draws_the_message(draw, _, message):
    # read_table gives a frame without columns for a table with no data file
    assert message in texts(drawn(draw(pd.DataFrame())))


def test_messages_are_short_and_say_what_happened():
    assert figures.NOTHING_QUARANTINED == "nothing quarantined: every row passed the rules"
    for message in (figures.NO_SHARDS, figures.NO_REGION_RATES, figures.NO_GENDER_PAIRS, figures.NO_AGGREGATES):
        assert 0 < len(message) <= 60


# --- 04 ----------------------------------------------------------------------------------------------
def test_records_per_shard_labels_shards_by_number_without_overlap():
    per_shard = {f"shardId-{i:012d}": 130 + i for i in range(4)}  # the producer's result.per_shard
    ax = drawn(figures.records_per_shard(per_shard))
    assert tick_texts(ax.get_xticklabels()) == ["0", "1", "2", "3"]
    assert_no_overlap(ax.get_xticklabels())
    assert [p.get_height() for p in ax.patches] == [130, 131, 132, 133]
    assert_integer_ticks(ax.get_yticklabels(), ax.get_yticks())


def test_records_per_shard_one_shard_and_many_shards():
    one = drawn(figures.records_per_shard(pd.DataFrame({"shard": ["shardId-000000000000"], "records": [3]})))
    assert tick_texts(one.get_xticklabels()) == ["0"]
    assert_integer_ticks(one.get_yticklabels(), one.get_yticks())  # no 0.5 records
    many = drawn(figures.records_per_shard({f"shardId-{i:012d}": 10 for i in range(200)}))
    assert len(many.patches) == 200
    assert 0 < len(tick_texts(many.get_xticklabels())) <= figures.MAX_SHARD_LABELS
    assert_no_overlap(many.get_xticklabels())


def test_shard_label():
    assert figures.shard_label("shardId-000000000000") == "0"
    assert figures.shard_label("shardId-000000000042") == "42"
    assert figures.shard_label("my-shard") == "my-shard"


# --- 08 ----------------------------------------------------------------------------------------------
def test_quarantine_one_rule_one_row_has_integer_ticks():
    ax = drawn(figures.quarantine_by_rule(pd.DataFrame({"rule": ["gender_known"], "rows": [1]})))
    assert tick_texts(ax.get_yticklabels()) == ["gender_known"]
    assert_integer_ticks(ax.get_xticklabels(), ax.get_xticks())  # no quarter rows


def test_rule_counts_from_the_quarantine_table():
    # pyarrow gives array columns as numpy arrays
    quarantine = pd.DataFrame(
        {
            "event_id": ["a", "b", "c"],
            "broken_rules": [
                np.array(["rate_in_range"]),
                np.array(["country_present", "rate_in_range"]),
                np.array(["record_parsed"]),
            ],
        }
    )
    counts = figures.rule_counts(quarantine)
    assert list(counts.itertuples(index=False, name=None)) == [
        ("rate_in_range", 2),
        ("country_present", 1),
        ("record_parsed", 1),
    ]
    ax = drawn(figures.quarantine_by_rule(quarantine))
    assert tick_texts(ax.get_yticklabels())[-1] == "rate_in_range"  # most at the top
    assert_integer_ticks(ax.get_xticklabels(), ax.get_xticks())
    assert figures.rule_counts(pd.DataFrame()).empty
    assert list(figures.rule_counts(pd.DataFrame()).columns) == ["rule", "rows"]


# --- 09 ----------------------------------------------------------------------------------------------
def test_rate_by_region_year_legend_outside_and_integer_years():
    years = range(2008, 2013)
    by_region = pd.DataFrame(
        [(region, year, 10.0 + i + year % 3) for i, region in enumerate(("Africa", "Americas", "Asia"))
         for year in years],
        columns=["Region", "Year", "avg_rate_percent"],
    ).astype({"Year": "int32"})
    ax = drawn(figures.rate_by_region_year(by_region))
    assert len(ax.get_lines()) == 3
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["Africa", "Americas", "Asia"]
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # covers no line
    assert_integer_ticks(ax.get_xticklabels(), ax.get_xticks())
    assert ax.xaxis.get_offset_text().get_text() == ""


def test_rate_by_region_year_one_region_one_year():
    one = pd.DataFrame({"Region": ["Africa"], "Year": [2020], "avg_rate_percent": [21.5]})
    ax = drawn(figures.rate_by_region_year(one))
    assert len(ax.get_lines()) == 1
    assert "2020" in tick_texts(ax.get_xticklabels())
    assert_integer_ticks(ax.get_xticklabels(), ax.get_xticks())


def test_top_countries_one_row():
    top = pd.DataFrame({"rank": [1], "Country": ["Chad"], "latest_year": [2019], "rate_percent": [38.2]})
    ax = drawn(figures.top_countries_latest(top))
    assert tick_texts(ax.get_yticklabels()) == ["Chad (2019)"]
    assert [p.get_width() for p in ax.patches] == [38.2]


def test_top_countries_highest_at_the_top():
    top = pd.DataFrame({"rank": [1, 2], "Country": ["Mali", "Chad"], "latest_year": [2015, 2019],
                        "rate_percent": [50.0, 30.0]})
    ax = drawn(figures.top_countries_latest(top))
    assert tick_texts(ax.get_yticklabels()) == ["Chad (2019)", "Mali (2015)"]  # bottom to top


def test_gender_scatter_one_pair():
    pairs = pd.DataFrame({"female_rate_percent": [27.0], "male_rate_percent": [33.0],
                          "gap_male_minus_female": [6.0]})
    ax = drawn(figures.gender_scatter(pairs))
    assert ax.collections[0].get_offsets().tolist() == [[27.0, 33.0]]
    assert ax.get_xlim() == ax.get_ylim() and ax.get_xlim()[1] > 33.0


def test_aggregate_rates_one_aggregate_and_age_groups(tmp_path):
    one = pd.DataFrame({"Country": ["World"], "Country_Code": ["WORLD"], "Region": ["Global"], "Year": [2020],
                        "Age_Group": ["5-17 years"], "rate_percent": [9.6]})
    ax = drawn(figures.aggregate_rates(one, save_to=tmp_path / "figs" / "aggregates.png"))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["World"]
    assert_integer_ticks(ax.get_xticklabels(), ax.get_xticks())
    assert (tmp_path / "figs" / "aggregates.png").is_file()

    two_ages = pd.concat([one, one.assign(Age_Group="7-14 years", rate_percent=7.0)])
    legend = figures.aggregate_rates(two_ages).get_legend()
    assert sorted(t.get_text() for t in legend.get_texts()) == ["World (5-17 years)", "World (7-14 years)"]


def test_aggregate_rates_without_a_total_rate():
    no_total = pd.DataFrame({"Country": ["World"], "Year": [2020], "rate_percent": [None]})
    assert figures.NO_AGGREGATES in texts(figures.aggregate_rates(no_total))


def test_draws_into_given_axes():
    _, (left, right) = plt.subplots(1, 2)
    assert figures.gender_scatter(pd.DataFrame(), ax=left) is left
    assert figures.quarantine_by_rule(pd.DataFrame({"rule": ["x"], "rows": [2]}), ax=right) is right
