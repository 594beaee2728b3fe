"""The charts the notebooks draw, one function each (pandas + matplotlib; nothing from Spark).

Each takes the pandas DataFrame of a table (as ``local_pipeline.read_table`` or ``toPandas()`` give
it) and returns the matplotlib Axes. An empty frame (even one without columns, as ``read_table``
returns for a table with no data file) draws the axes with a short centred message instead of
raising. ``ax`` draws into given axes; ``save_to`` also writes the figure as a PNG.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, MaxNLocator

NO_SHARDS = "no records sent"
NOTHING_QUARANTINED = "nothing quarantined: every row passed the rules"
NO_REGION_RATES = "no country rows with Gender = Total"
NO_TOP_COUNTRIES = "no country rows with Gender = Total"
NO_GENDER_PAIRS = "no country has both a female and a male rate"
NO_AGGREGATES = "no aggregate rows (WORLD, REGION) in the data"
MAX_SHARD_LABELS = 16
LEGEND_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0, "fontsize": 8}


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt  # pyplot only when drawing: notebooks show its figures inline

    return plt.subplots(figsize=figsize)[1]


def _finish(ax: Axes, save_to: str | Path | None) -> Axes:
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        ax.figure.savefig(save_to, dpi=100, bbox_inches="tight")
    return ax


def _empty(frame: pd.DataFrame, *columns: str) -> bool:
    return frame is None or frame.empty or any(c not in frame.columns for c in columns)


def _message(ax: Axes, title: str, text: str) -> Axes:
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="dimgrey")
    return ax


def _integer_ticks(axis) -> None:
    """Whole numbers only (no 0.25 rows, no 2012.5), written without an offset or exponent."""
    axis.set_major_locator(MaxNLocator(integer=True))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.0f}"))


def shard_label(shard_id: str) -> str:
    """``shardId-000000000003`` -> ``3`` (any other id is kept)."""
    found = re.fullmatch(r"shardId-0*(\d+)", str(shard_id))
    return found.group(1) if found else str(shard_id)


# --- 04: records per shard -------------------------------------------------------------------------
def records_per_shard(per_shard: pd.DataFrame | Mapping[str, int], *, ax: Axes | None = None,
                      save_to: str | Path | None = None) -> Axes:
    """Bars of records per shard. ``per_shard``: columns ``shard``, ``records`` (or the producer's
    ``result.per_shard`` dict). Shards are labelled by their number (``shardId-000000000003`` -> 3)."""
    if isinstance(per_shard, Mapping):
        per_shard = pd.DataFrame({"shard": list(per_shard), "records": list(per_shard.values())})
    title = "records per shard"
    ax = _axes(ax, (6, 2.8))
    if _empty(per_shard, "shard", "records"):
        return _finish(_message(ax, title, NO_SHARDS), save_to)
    frame = per_shard.sort_values("shard")
    step = -(-len(frame) // MAX_SHARD_LABELS)  # label every step-th bar: labels never overlap
    ax.bar(range(len(frame)), frame["records"].astype(int), color="tab:blue")
    shown = range(0, len(frame), step)
    ax.set_xticks(list(shown), [shard_label(frame["shard"].iloc[i]) for i in shown])
    ax.set_xlabel("shard (shardId-… number)")
    ax.set_ylabel("records")
    ax.set_title(title)
    _integer_ticks(ax.yaxis)
    return _finish(ax, save_to)


# --- 08: quarantined rows per broken rule -----------------------------------------------------------
def rule_counts(quarantine: pd.DataFrame) -> pd.DataFrame:
    """``rule``, ``rows`` (most first) from silver_quarantine (``broken_rules``) or from
    gold_quarantine_by_rule (already ``rule``, ``rows``); empty frame if nothing is quarantined."""
    if not _empty(quarantine, "rule", "rows"):
        counts = quarantine[["rule", "rows"]].astype({"rows": int})
    elif not _empty(quarantine, "broken_rules"):
        rules = quarantine["broken_rules"].explode().dropna()
        counts = rules.value_counts().rename_axis("rule").reset_index(name="rows")
    else:
        return pd.DataFrame({"rule": pd.Series(dtype=str), "rows": pd.Series(dtype=int)})
    return counts.sort_values(["rows", "rule"], ascending=[False, True], ignore_index=True)


def quarantine_by_rule(quarantine: pd.DataFrame, *, ax: Axes | None = None,
                       save_to: str | Path | None = None) -> Axes:
    """Horizontal bars: quarantined rows per broken rule (see rule_counts for the input)."""
    title = "quarantined rows per broken rule"
    ax = _axes(ax, (6, 2.8))
    counts = rule_counts(quarantine)
    if counts.empty:
        return _finish(_message(ax, title, NOTHING_QUARANTINED), save_to)
    counts = counts.iloc[::-1]  # most at the top
    ax.barh(counts["rule"], counts["rows"], color="tab:red")
    ax.set_xlabel("rows")
    ax.set_title(title)
    _integer_ticks(ax.xaxis)
    return _finish(ax, save_to)


# --- 09: the gold views -----------------------------------------------------------------------------
def _lines_by_year(ax: Axes, frame: pd.DataFrame, series: str, value: str) -> None:
    """One line per ``series`` value over Year, legend outside the plot, integer Year ticks."""
    table = frame.pivot_table(index="Year", columns=series, values=value, aggfunc="mean").sort_index()
    for name in table.columns:
        points = table[name].dropna()
        ax.plot(points.index.astype(int), points.to_numpy(), marker="o", label=str(name))
    years = table.index.astype(int)
    if years.min() == years.max():  # one year: keep it in the middle
        ax.set_xlim(years.min() - 1, years.max() + 1)
    _integer_ticks(ax.xaxis)
    ax.set_xlabel("Year")
    ax.legend(**LEGEND_OUTSIDE)


def rate_by_region_year(by_region: pd.DataFrame, *, ax: Axes | None = None,
                        save_to: str | Path | None = None) -> Axes:
    """Lines of gold_rate_by_region_year: average rate (%) per Region over the years."""
    title = "Average child labour rate (%) by region (countries)"
    ax = _axes(ax, (9, 4))
    if _empty(by_region, "Region", "Year", "avg_rate_percent"):
        return _finish(_message(ax, title, NO_REGION_RATES), save_to)
    _lines_by_year(ax, by_region, "Region", "avg_rate_percent")
    ax.set_ylabel("% of children")
    ax.set_title(title)
    return _finish(ax, save_to)


def top_countries_latest(top: pd.DataFrame, *, ax: Axes | None = None,
                         save_to: str | Path | None = None) -> Axes:
    """Horizontal bars of gold_top_countries_latest: each country's rate (%) in its latest year."""
    title = "Highest latest rate (%)"
    ax = _axes(ax, (7, 4))
    if _empty(top, "Country", "rate_percent"):
        return _finish(_message(ax, title, NO_TOP_COUNTRIES), save_to)
    frame = top.sort_values("rate_percent")  # highest at the top
    labels = frame["Country"].astype(str)
    if "latest_year" in frame.columns:
        labels = labels + " (" + frame["latest_year"].astype(int).astype(str) + ")"
    ax.barh(range(len(frame)), frame["rate_percent"], color="tab:orange")
    ax.set_yticks(range(len(frame)), list(labels))
    ax.set_xlabel("% of children")
    ax.set_title(title)
    return _finish(ax, save_to)


def gender_scatter(pairs: pd.DataFrame, *, ax: Axes | None = None,
                   save_to: str | Path | None = None) -> Axes:
    """gold_gender_comparison: male vs female rate (%), one point per country/year/age group, and
    the line where both are equal (points above it: boys work more)."""
    title = "Male vs female rate (%), same country/year/age group"
    ax = _axes(ax, (5, 5))
    if _empty(pairs, "female_rate_percent", "male_rate_percent"):
        return _finish(_message(ax, title, NO_GENDER_PAIRS), save_to)
    ax.scatter(pairs["female_rate_percent"], pairs["male_rate_percent"], alpha=0.6)
    limit = max(float(pairs[["female_rate_percent", "male_rate_percent"]].max().max()), 1.0) * 1.05
    ax.plot([0, limit], [0, limit], color="grey", linewidth=1)
    ax.set_xlim(0, limit)
    ax.set_ylim(0, limit)
    ax.set_aspect("equal")
    ax.set_xlabel("female rate (%)")
    ax.set_ylabel("male rate (%)")
    ax.set_title(title)
    return _finish(ax, save_to)


def aggregate_rates(aggregates: pd.DataFrame, *, ax: Axes | None = None,
                    save_to: str | Path | None = None) -> Axes:
    """Lines of gold_aggregate_rates: each published aggregate's rate (%) over the years (one line
    per aggregate, per age group too when there are several)."""
    title = "Published aggregates: child labour rate (%)"
    ax = _axes(ax, (9, 4))
    if _empty(aggregates, "Country", "Year", "rate_percent"):
        return _finish(_message(ax, title, NO_AGGREGATES), save_to)
    frame = aggregates.dropna(subset=["rate_percent"])
    if frame.empty:
        return _finish(_message(ax, title, NO_AGGREGATES), save_to)
    name = frame["Country"].astype(str)
    if "Age_Group" in frame.columns and frame["Age_Group"].nunique() > 1:
        name = name + " (" + frame["Age_Group"].astype(str) + ")"
    _lines_by_year(ax, frame.assign(aggregate=name), "aggregate", "rate_percent")
    ax.set_ylabel("% of children")
    ax.set_title(title)
    return _finish(ax, save_to)
