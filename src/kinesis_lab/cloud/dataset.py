"""The course's dataset: child labour statistics (Kaggle ``shaistashahid/child-labor-statistics``).

The repository ships a *synthetic* sample with the same columns and quirks as the real file
(``data/child_labor_statistics_sample.csv``, made by ``data/generate_sample.py``); the real file
is downloaded with kagglehub on request. Nothing here loads a whole file except ``preview``.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from kinesis_lab.cloud.config import find_home

COLUMNS = (
    "Country",
    "Country_Code",
    "Region",
    "Year",
    "Child_Labor_Rate_Percent",
    "Estimated_Children_Millions",
    "Gender",
    "Age_Group",
)
KAGGLE_HANDLE = "shaistashahid/child-labor-statistics"
DATA_DIR = find_home() / "data"
SAMPLE_NAME = "child_labor_statistics_sample.csv"
SAMPLE_PATH = DATA_DIR / SAMPLE_NAME

GENDERS = ("Total", "Female", "Male", "Boys", "Girls")
AGE_GROUPS = ("7-14 years", "5-17 years")
FIRST_YEAR, LAST_YEAR = 2000, 2024


class DatasetError(RuntimeError):
    """The dataset cannot be found, downloaded or read; the message says what to do."""


# --- the synthetic sample --------------------------------------------------------------------------
# (country, ISO3 code, region, base child labour rate %, children in the 5-17 age group, millions).
# Names follow the real file's style: commas ("Korea, Republic of") and non-ASCII letters.
_COUNTRIES = (
    ("World", "WORLD", "Global", 10.5, 1560.0),
    ("Congo, Democratic Republic of the", "COD", "Sub-Saharan Africa", 38.0, 31.0),
    ("Tanzania, United Republic of", "TZA", "Sub-Saharan Africa", 29.0, 18.5),
    ("Côte d'Ivoire", "CIV", "Sub-Saharan Africa", 31.5, 8.4),
    ("São Tomé and Príncipe", "STP", "Sub-Saharan Africa", 15.2, 0.07),
    ("Nigeria", "NGA", "Sub-Saharan Africa", 31.0, 68.0),
    ("Ethiopia", "ETH", "Sub-Saharan Africa", 43.0, 36.0),
    ("Ghana", "GHA", "Sub-Saharan Africa", 21.0, 9.0),
    ("Burkina Faso", "BFA", "Sub-Saharan Africa", 41.0, 7.1),
    ("Mali", "MLI", "Sub-Saharan Africa", 44.5, 7.0),
    ("Chad", "TCD", "Sub-Saharan Africa", 39.0, 6.0),
    ("Guinea-Bissau", "GNB", "Sub-Saharan Africa", 36.0, 0.6),
    ("Sierra Leone", "SLE", "Sub-Saharan Africa", 33.0, 2.5),
    ("Uganda", "UGA", "Sub-Saharan Africa", 24.0, 14.0),
    ("Malawi", "MWI", "Sub-Saharan Africa", 37.0, 6.0),
    ("Korea, Republic of", "KOR", "Asia and the Pacific", 0.8, 6.5),
    ("Iran, Islamic Republic of", "IRN", "Asia and the Pacific", 6.0, 16.0),
    ("Lao People's Democratic Republic", "LAO", "Asia and the Pacific", 25.0, 2.0),
    ("Bangladesh", "BGD", "Asia and the Pacific", 6.8, 40.0),
    ("India", "IND", "Asia and the Pacific", 5.9, 300.0),
    ("Nepal", "NPL", "Asia and the Pacific", 21.0, 8.0),
    ("Pakistan", "PAK", "Asia and the Pacific", 12.0, 60.0),
    ("Viet Nam", "VNM", "Asia and the Pacific", 9.0, 17.0),
    ("Philippines", "PHL", "Asia and the Pacific", 8.5, 30.0),
    ("Cambodia", "KHM", "Asia and the Pacific", 11.0, 4.4),
    ("Papua New Guinea", "PNG", "Asia and the Pacific", 27.0, 2.6),
    ("Bolivia, Plurinational State of", "BOL", "Latin America and the Caribbean", 15.0, 3.3),
    ("Venezuela, Bolivarian Republic of", "VEN", "Latin America and the Caribbean", 7.5, 7.0),
    ("Brazil", "BRA", "Latin America and the Caribbean", 5.0, 42.0),
    ("Peru", "PER", "Latin America and the Caribbean", 17.0, 8.0),
    ("Paraguay", "PRY", "Latin America and the Caribbean", 14.0, 1.8),
    ("Guatemala", "GTM", "Latin America and the Caribbean", 18.0, 5.0),
    ("Haiti", "HTI", "Latin America and the Caribbean", 24.0, 3.2),
    ("Colombia", "COL", "Latin America and the Caribbean", 6.5, 11.0),
    ("Curaçao", "CUW", "Latin America and the Caribbean", 2.1, 0.03),
    ("Türkiye", "TUR", "Other", 4.4, 22.0),
    ("Moldova, Republic of", "MDA", "Other", 9.5, 0.5),
    ("Egypt", "EGY", "Other", 5.8, 26.0),
    ("Yemen", "YEM", "Other", 13.6, 10.0),
    ("Iraq", "IRQ", "Other", 4.9, 14.0),
    ("Kyrgyzstan", "KGZ", "Other", 26.0, 1.7),
)
# share of a country's 5-17 population that a gender / age group covers, and its rate offset
_GENDER_SHAPE = {"Total": (1.0, 0.0), "Female": (0.49, -1.6), "Male": (0.51, 1.5),
                 "Boys": (0.51, 1.8), "Girls": (0.49, -1.9)}
_AGE_SHAPE = {"5-17 years": (1.0, 0.0), "7-14 years": (0.62, -0.8)}


# The real file's published aggregates besides WORLD: Country_Code "REGION", Country = Region = the
# region's name. AGGREGATE_ONLY_REGION has no country in the file, only its aggregate rows.
AGGREGATE_ONLY_REGION = "Europe and Central Asia"
REGION_AGGREGATES = (
    ("Sub-Saharan Africa", "REGION", "Sub-Saharan Africa", 24.0, 300.0),
    ("Asia and the Pacific", "REGION", "Asia and the Pacific", 6.5, 830.0),
    ("Latin America and the Caribbean", "REGION", "Latin America and the Caribbean", 6.0, 150.0),
    (AGGREGATE_ONLY_REGION, "REGION", AGGREGATE_ONLY_REGION, 4.1, 170.0),
)
AGGREGATE_YEARS = (2008, 2012, 2016, 2020)  # the years the aggregates are published for
AGGREGATE_GENDERS = ("Total", "Female", "Male")


def _synthetic_row(rng: random.Random, country: tuple) -> list[str]:
    year = rng.randint(FIRST_YEAR, LAST_YEAR)
    gender = rng.choice(GENDERS)
    age_group = rng.choice(AGE_GROUPS)
    return _row(rng, country, year, gender, age_group)


def _row(rng: random.Random, country: tuple, year: int, gender: str, age_group: str) -> list[str]:
    name, code, region, base_rate, children = country
    gender_share, gender_offset = _GENDER_SHAPE[gender]
    age_share, age_offset = _AGE_SHAPE[age_group]
    trend = -0.35 * (year - FIRST_YEAR) * base_rate / 25  # rates fall slowly over the years
    rate = base_rate + trend + gender_offset + age_offset + rng.gauss(0, base_rate * 0.08)
    rate = round(min(100.0, max(0.0, rate)), 1)
    millions = round(children * gender_share * age_share * rate / 100, 2)
    return [name, code, region, str(year), f"{rate:.1f}", f"{millions:.2f}", gender, age_group]


# What real exports contain now and then: each breaks one silver rule (see databricks/pipeline/medallion.py),
# so the quarantine has something to show. The last one is not even CSV with 8 fields.
DIRTY_ROWS = (
    ["Nepal", "NPL", "Asia and the Pacific", "2012", "N/A", "1.10", "Total", "5-17 years"],
    ["Peru", "PER", "Latin America and the Caribbean", "1899", "16.4", "1.30", "Total", "5-17 years"],
    ["Ghana", "GHA", "Sub-Saharan Africa", "2016", "19.9", "-0.40", "Female", "7-14 years"],
    ["Chad", "TCD", "Sub-Saharan Africa", "2019", "37.5", "2.20", "Unknown", "5-17 years"],
    ["Haiti", "", "Latin America and the Caribbean", "2015", "23.0", "0.75", "Total", "5-17 years"],
    ["Mali", "MLI", "Sub-Saharan Africa", "2018", "104.5", "3.10", "Boys", "5-17 years"],
    ["Brazil", "BRA", "Latin America and the Caribbean", "2011", "5.4", "2.20", "Girls", ""],
)
MALFORMED_LINE = "Congo, Republic of,COG,Sub-Saharan Africa,2014,22.5,0.60,Total,5-17 years"  # unquoted comma


def generate_synthetic_sample(path: str | Path = SAMPLE_PATH, rows: int = 540, seed: int = 42,
                              dirty: bool = False, aggregates: bool = False) -> Path:
    """Write a seeded synthetic CSV shaped like the real file (same seed -> same bytes).

    Keys (Country, Year, Gender, Age_Group) are not unique, as in the real file: about 2 % of the
    rows are exact duplicates and about 1 % repeat a key with a revised value. With ``dirty`` (the
    shipped sample), ``DIRTY_ROWS`` and ``MALFORMED_LINE`` replace rows at seeded places: the total
    stays ``rows`` data lines.

    With ``aggregates`` (and ``dirty=False``: a real-like file, every row valid) the published
    aggregates replace the random WORLD rows: WORLD and each of ``REGION_AGGREGATES`` (one of them,
    ``AGGREGATE_ONLY_REGION``, has no country) for every ``AGGREGATE_YEARS`` and
    ``AGGREGATE_GENDERS``, age group 5-17 years; ``rows`` must leave room for them.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    rng = random.Random(seed)
    duplicates, revisions = rows // 50, rows // 100
    base_rows = rows - duplicates - revisions
    if aggregates:
        table = _aggregate_rows(rng)
        if len(table) >= base_rows:
            raise ValueError(f"rows={rows} leaves no room for a country next to the {len(table)} aggregate rows")
        countries = [c for c in _COUNTRIES if c[1] != "WORLD"]
        table += [_synthetic_row(rng, rng.choice(countries)) for _ in range(base_rows - len(table))]
    else:
        weights = [6 if c[1] == "WORLD" else 1 for c in _COUNTRIES]
        table = [_synthetic_row(rng, rng.choices(_COUNTRIES, weights)[0]) for _ in range(base_rows)]
    table.sort(key=lambda r: (r[0], int(r[3]), r[6], r[7]))
    for _ in range(revisions):  # same key, a revised estimate next to the first one
        at = rng.randrange(len(table))
        revised = list(table[at])
        new_rate = min(100.0, float(revised[4]) + rng.choice((-0.7, -0.3, 0.4, 0.9)))
        revised[4] = f"{max(0.0, new_rate):.1f}"
        table.insert(at + 1, revised)
    for _ in range(duplicates):  # exact duplicate rows, somewhere later in the file
        source = rng.randrange(len(table))
        table.insert(rng.randrange(source, len(table) + 1), list(table[source]))

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if dirty:
        bad = [*DIRTY_ROWS, MALFORMED_LINE]
        for at, row in zip(sorted(rng.sample(range(len(table)), min(len(bad), len(table)))), bad, strict=False):
            table[at] = row
    writer.writerow(COLUMNS)
    for row in table:
        if isinstance(row, str):  # a raw line, written as is
            buffer.write(row + "\n")
        else:
            writer.writerow(row)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue().encode("utf-8"))
    return path


def _aggregate_rows(rng: random.Random) -> list[list[str]]:
    world = next(c for c in _COUNTRIES if c[1] == "WORLD")
    return [
        _row(rng, aggregate, year, gender, "5-17 years")
        for aggregate in (world, *REGION_AGGREGATES)
        for year in AGGREGATE_YEARS
        for gender in AGGREGATE_GENDERS
    ]


# --- finding and checking a dataset ----------------------------------------------------------------
def _download_from_kaggle() -> Path:
    try:
        import kagglehub
    except ImportError as exc:
        raise DatasetError(
            "source='kaggle' needs kagglehub, which is not installed: run "
            "`pip install 'kinesis-lab[kaggle]'` (or `pip install kagglehub`), "
            "or use source='sample' for the shipped synthetic sample"
        ) from exc
    try:
        folder = Path(kagglehub.dataset_download(KAGGLE_HANDLE))
    except Exception as exc:  # network, credentials, Kaggle outage: all end the same way for the reader
        raise DatasetError(
            f"could not download {KAGGLE_HANDLE} from Kaggle ({type(exc).__name__}: {exc}); check the network "
            "(and Kaggle credentials if asked), or use source='sample' for the shipped synthetic sample"
        ) from exc
    candidates = sorted(folder.rglob("*.csv")) if folder.is_dir() else [folder]
    for candidate in candidates:
        if not check_columns(candidate):
            return candidate
    raise DatasetError(
        f"the Kaggle download in {folder} has no CSV with the expected columns ({', '.join(COLUMNS)}); "
        f"found: {', '.join(c.name for c in candidates) or 'no CSV file'}"
    )


def load_dataset(source: str | Path = "sample") -> Path:
    """The CSV to use: ``"sample"`` (shipped synthetic file), ``"kaggle"`` (real file, via kagglehub)
    or the path of a CSV file that must exist."""
    if str(source) == "sample":
        if not SAMPLE_PATH.is_file():
            raise DatasetError(f"the shipped sample {SAMPLE_PATH} is missing: recreate it with "
                               "`python data/generate_sample.py`")
        return SAMPLE_PATH
    if str(source) == "kaggle":
        return _download_from_kaggle()
    path = Path(source).expanduser()
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path} (give a CSV path, 'sample' or 'kaggle')")
    return path


def header_problems(fields: list[str]) -> list[str]:
    """What is wrong with a parsed header (column order does not matter). Empty list: fine."""
    names = [f.strip() for f in fields]
    problems = []
    missing = [c for c in COLUMNS if c not in names]
    extra = [n for n in names if n not in COLUMNS]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected column(s): {', '.join(repr(n) for n in extra)}")
    if duplicated:
        problems.append(f"duplicate column(s): {', '.join(duplicated)}")
    by_lower = {c.lower(): c for c in missing}
    for name in extra:
        if name.lower() in by_lower:
            problems.append(f"column {name!r} should be spelled {by_lower[name.lower()]!r} (names are case-sensitive)")
    return problems


def check_columns(path: str | Path) -> list[str]:
    """Problems with the file's header line (missing / unexpected / duplicate columns). Empty: fine."""
    with Path(path).open("rb") as fh:
        first = fh.readline(1024 * 1024)
    if not first:
        return ["the file is empty (no header line)"]
    if len(first) == 1024 * 1024 and not first.endswith(b"\n"):
        return ["the first line is over 1 MiB: not a CSV header"]
    try:
        text = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        return ["the header line is not valid UTF-8"]
    if not text.strip():
        return ["the header line is empty"]
    try:
        fields = next(csv.reader([text], strict=True))
    except csv.Error as exc:
        return [f"the header line is not valid CSV ({exc})"]
    return header_problems(fields)


def preview(path: str | Path, n: int = 10, raw: bool = True):
    """The first ``n`` rows as a pandas DataFrame. ``raw=True`` keeps every value as the text the
    producer sends (no type guessing, "N/A" stays "N/A"); ``raw=False`` lets pandas infer types."""
    import pandas as pd

    if raw:
        return pd.read_csv(path, nrows=n, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    return pd.read_csv(path, nrows=n, encoding="utf-8-sig")
