"""Bad input, case by case: each gets a clear message (file level) or a quarantine reason (line level).

Nothing is dropped silently: a file the producer refuses says why before sending anything; every line
it reads either becomes a row, a marker record (``malformed``) that silver quarantines under
``record_parsed``, or is a blank line counted in ``blank_lines``. The line-level cases travel through
the real pipeline in one run (their records written to a landing folder as Firehose would), and the
ledger gives each line's fate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kinesis_lab.cloud.dataset import COLUMNS, check_columns
from kinesis_lab.cloud.ledger import BLANK, CONTINUED, build_ledger
from kinesis_lab.cloud.producer import produce_file
from kinesis_lab.cloud.records import MAX_RECORD_BYTES, HeaderError, RecordReader, iter_records
from kinesis_lab.local import pipeline as lp

REPO = Path(__file__).resolve().parents[1]
PIPELINE_DIR = REPO / "databricks" / "pipeline"
HEADER = ",".join(COLUMNS)
GOOD = "World,WORLD,Global,2020,9.6,160.00,Total,5-17 years"
EXPECTED = "Expected (any order): " + ", ".join(COLUMNS)
# what a row of empty fields breaks: every "present" / "is a number" rule (a range rule judges numbers only)
EMPTY_ROW_RULES = [
    "country_present",
    "country_code_present",
    "gender_present",
    "age_group_present",
    "year_is_integer",
    "rate_is_number",
    "children_is_number",
]


def row(**changes: str) -> str:
    values = dict(zip(COLUMNS, GOOD.split(","), strict=True))
    values.update(changes)
    return ",".join(values[c] for c in COLUMNS)


# --- files the producer refuses or has nothing to send from -------------------------------------------
# (case, file bytes, exact message): HeaderError before anything is sent, or the run's one warning
REFUSED = [
    (
        "missing_column",
        f"{HEADER.replace(',Gender', '')}\n{GOOD}\n".encode(),
        "missing_column.csv: the header does not match the course's columns: missing column(s): Gender. "
        + EXPECTED,
    ),
    (
        "extra_column",
        f"{HEADER},Notes\n{GOOD},x\n".encode(),
        "extra_column.csv: the header does not match the course's columns: unexpected column(s): 'Notes'. "
        + EXPECTED,
    ),
    (
        "duplicate_column",
        f"{HEADER},Year\n".encode(),
        "duplicate_column.csv: the header does not match the course's columns: duplicate column(s): Year. "
        + EXPECTED,
    ),
    (
        "wrong_case",
        HEADER.replace("Gender", "gender").encode() + b"\n",
        "wrong_case.csv: the header does not match the course's columns: missing column(s): Gender; "
        "unexpected column(s): 'gender'; column 'gender' should be spelled 'Gender' (names are case-sensitive). "
        + EXPECTED,
    ),
    (
        "semicolons",
        HEADER.replace(",", ";").encode() + b"\n",  # a European Excel export
        "semicolons.csv: the header does not match the course's columns: missing column(s): "
        + ", ".join(COLUMNS)
        + "; unexpected column(s): '"
        + HEADER.replace(",", ";")
        + "'. "
        + EXPECTED,
    ),
    (
        "utf16",
        ("\ufeff" + HEADER + "\n").encode("utf-16-le"),  # Excel's "Unicode text"
        "utf16.csv: the header does not match the course's columns: the header line is not valid UTF-8. "
        + EXPECTED,
    ),
    (
        "huge_first_line",
        b"x" * (MAX_RECORD_BYTES + 10),
        "huge_first_line.csv: the first line is over 1 MiB: not a CSV header",
    ),
]
# (case, file bytes, the run's warnings, blank lines counted, check_columns' problems)
NOTHING_TO_SEND = [
    ("empty", b"", ["empty.csv is empty: nothing to send"], 0, ["the file is empty (no header line)"]),
    (
        "header_only",
        f"{HEADER}\n".encode(),
        ["header_only.csv has a header and no data lines: nothing to send"],
        0,
        [],
    ),
    # no warning here: the run's blank_lines (shown by notebook 04) says where the two lines went
    ("header_and_blank_lines", f"{HEADER}\n\n  \n".encode(), [], 2, []),
]


@pytest.mark.parametrize("case, content, message", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_files_say_why_before_sending(tmp_path, case, content, message):
    path = tmp_path / f"{case}.csv"
    path.write_bytes(content)
    with pytest.raises(HeaderError) as err:
        # no Kinesis client at all: the header is checked before the first call could be made
        produce_file(path, stream_name="s", kinesis=None, progress=False)
    assert str(err.value) == message
    assert check_columns(path)  # the notebook's pre-check reports it too


@pytest.mark.parametrize(
    "case, content, warnings, blank, columns", NOTHING_TO_SEND, ids=[c[0] for c in NOTHING_TO_SEND]
)
def test_files_without_data_lines_say_so(tmp_path, case, content, warnings, blank, columns):
    path = tmp_path / f"{case}.csv"
    path.write_bytes(content)
    result = produce_file(path, stream_name="s", kinesis=None, progress=False)
    assert (result.warnings, result.blank_lines, result.records_sent, result.put_calls) == (
        warnings,
        blank,
        0,
        0,
    )
    assert check_columns(path) == columns


# --- lines: the producer's verdict, then the pipeline's ----------------------------------------------
OVERSIZE = row(Country="y" * (MAX_RECORD_BYTES + 100))
# (case, raw line, producer: None = a row / the marker's error / BLANK, fate after silver, rules)
LINES = [
    ("good", GOOD.encode(), None, "silver", ()),
    (
        "unclosed_quote",
        b'"Korea, Republic of,KOR,Asia,2020,1.0,0.1,Total,5-17 years',
        "unclosed quote",
        "quarantine",
        ("record_parsed",),
    ),
    (
        "too_many_fields",
        (GOOD + ",extra").encode(),
        "too many fields (9, expected 8)",
        "quarantine",
        ("record_parsed",),
    ),
    (
        "too_few_fields",
        b"World,WORLD,Global,2020",
        "too few fields (4, expected 8)",
        "quarantine",
        ("record_parsed",),
    ),
    (
        "tab_separated",
        GOOD.replace(",", "\t").encode(),
        "too few fields (1, expected 8)",
        "quarantine",
        ("record_parsed",),
    ),
    (
        "text_after_quote",
        b'"World"x,WORLD,Global,2020,9.6,160.00,Total,5-17 years',
        "CSV syntax: ',' expected after '\"'",
        "quarantine",
        ("record_parsed",),
    ),
    (
        "not_utf8",
        row(Country="C\xf4te").encode("latin-1"),
        "not valid UTF-8 (byte 0xf4 at byte 2)",
        "quarantine",
        ("record_parsed",),
    ),
    (
        "field_over_1_mib",
        OVERSIZE.encode(),
        f"record over 1 MiB (line of {len(OVERSIZE)} bytes)",
        "quarantine",
        ("record_parsed",),
    ),
    (
        "decimal_comma_quoted",
        row(Child_Labor_Rate_Percent='"9,6"', Estimated_Children_Millions='"160,5"').encode(),
        None,
        "silver",
        (),
    ),
    (
        "decimal_comma_unquoted",
        row(Child_Labor_Rate_Percent="9,6").encode(),
        "too many fields (9, expected 8)",
        "quarantine",
        ("record_parsed",),
    ),
    ("rate_na", row(Child_Labor_Rate_Percent="N/A").encode(), None, "quarantine", ("rate_is_number",)),
    ("country_null_marker", row(Country="NULL").encode(), None, "quarantine", ("country_present",)),
    ("all_empty", b",,,,,,,", None, "quarantine", tuple(EMPTY_ROW_RULES)),
    ("rate_nan", row(Child_Labor_Rate_Percent="NaN").encode(), None, "quarantine", ("rate_is_number",)),
    ("rate_exponent", row(Child_Labor_Rate_Percent="1e1").encode(), None, "quarantine", ("rate_is_number",)),
    ("year_too_old", row(Year="1850").encode(), None, "quarantine", ("year_in_range",)),
    ("year_in_future", row(Year="2999").encode(), None, "quarantine", ("year_in_range",)),
    ("year_not_integer", row(Year="2020.5").encode(), None, "quarantine", ("year_is_integer",)),
    ("rate_over_100", row(Child_Labor_Rate_Percent="100.1").encode(), None, "quarantine", ("rate_in_range",)),
    ("rate_negative", row(Child_Labor_Rate_Percent="-0.1").encode(), None, "quarantine", ("rate_in_range",)),
    (
        "children_negative",
        row(Estimated_Children_Millions="-1").encode(),
        None,
        "quarantine",
        ("children_non_negative",),
    ),
    ("gender_unknown", row(Gender="Unknown").encode(), None, "quarantine", ("gender_known",)),
    ("padded_and_synonym", row(Gender=" boys ", Country="  World ").encode(), None, "silver", ()),
    ("escaped_quote", row(Country='"C\u00f4te d""Ivoire"').encode(), None, "silver", ()),
    ("json_lookalike", row(Country='"x"",""event_id"":""hijack"').encode(), None, "silver", ()),
    ("blank", b"", BLANK, BLANK, ()),
    ("whitespace_only", b"   \t ", BLANK, BLANK, ()),
    # RFC 4180: a quoted field spanning two lines is one record, whose line is the first one
    ("quoted_newline_part_1", b'"Congo, Democratic Republic of the', None, "silver", ()),
    ("quoted_newline_part_2", b'(Kinshasa)",COD,Sub-Saharan Africa,2010,30.5,1.5,Total,5-17 years', CONTINUED,
     CONTINUED, ()),
    ("unclosed_then_good", b'"Open,XXX,Other,2010,1,1,Total,5-17 years', "unclosed quote", "quarantine",
     ("record_parsed",)),
    ("good_after_unclosed", row(Country="After").encode(), None, "silver", ()),
]
# a whole file each: header variants whose rows must come out right
FILES = {
    "bom_crlf.csv": ("\ufeff" + HEADER + "\r\n" + GOOD + "\r\n").encode(),
    "reordered.csv": (
        ",".join(reversed(COLUMNS)) + "\n" + ",".join(reversed(GOOD.split(","))) + "\n"
    ).encode(),
    "no_final_newline.csv": (HEADER + "\n" + GOOD).encode(),
    "latin1_export.csv": (HEADER + "\n" + GOOD + "\n" + row(Country="T\xfcrkiye") + "\n").encode("latin-1"),
}


def write_lines_csv(folder: Path) -> Path:
    path = folder / "lines.csv"
    path.write_bytes(HEADER.encode() + b"\n" + b"\n".join(raw for _, raw, *_ in LINES) + b"\n")
    return path


def test_every_line_case_gets_the_producers_verdict(tmp_path):
    path = write_lines_csv(tmp_path)
    reader = RecordReader(path, produced_at="2026-01-01T00:00:00.000Z")
    records = {r.line: r for r in reader}
    for line, (case, _, verdict, *_) in enumerate(LINES, start=2):
        if verdict in (BLANK, CONTINUED):
            assert line not in records, case
            continue
        record = records.pop(line)
        body = json.loads(record.data)
        assert body.get("error") == verdict, case
        assert record.kind == (
            "row" if verdict is None else "oversize" if "1 MiB" in verdict else "malformed"
        ), case
    assert records == {}  # nothing else, and nothing hidden: blank lines are counted
    assert reader.blank_lines == sum(1 for c in LINES if c[2] == BLANK)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, pipeline_builds):
    """Every case file's records in one landing folder (what Firehose writes), one pipeline run."""
    base = tmp_path_factory.mktemp("bad-input")
    csvs = [write_lines_csv(base)]
    for name, content in FILES.items():
        (base / name).write_bytes(content)
        csvs.append(base / name)
    landing = base / "external_location" / "bronze" / "ingestion_date=2026" / "01" / "01"
    landing.mkdir(parents=True)
    for path in csvs:
        (landing / f"delivery-{path.stem}").write_bytes(b"".join(r.data for r in iter_records(path)))
    try:
        run = lp.run_pipeline(
            PIPELINE_DIR,
            source_path=base / "external_location" / "bronze",
            build_dir=pipeline_builds(base / "build"),
            echo=None,
        )
        yield base, {p.name: p for p in csvs}, run
    finally:
        if hasattr(lp, "stop_pipeline_server"):  # the build folder's long-lived Spark server, if any
            lp.stop_pipeline_server(base / "build")


def test_every_line_case_ends_in_silver_or_quarantine_with_its_rule(pipeline_run):
    base, csvs, run = pipeline_run
    print(f"pipeline run: {run.duration_s:.1f} s")
    ledger = build_ledger(csvs["lines.csv"], tables=lp.table_reader(base / "build"))
    assert ledger.ok, ledger.table()
    got = {f.line: (f.fate, f.rules) for f in ledger.lines}
    expected = {
        line: (f"{fate} ({', '.join(sorted(rules))})" if rules else fate, tuple(sorted(rules)))
        for line, (_, _, _, fate, rules) in enumerate(LINES, start=2)
    }
    assert got == expected
    silver = lp.read_table(base / "build", lp.SILVER_TABLE)
    silver = silver[silver["source_file"] == "lines.csv"].set_index("source_line")
    lines = {case: n for n, (case, *_) in enumerate(LINES, start=2)}
    comma = silver.loc[lines["decimal_comma_quoted"]]
    assert (comma["Child_Labor_Rate_Percent"], comma["Estimated_Children_Millions"]) == (9.6, 160.5)
    padded = silver.loc[lines["padded_and_synonym"]]
    assert (padded["Country"], padded["Gender"]) == ("World", "Male")
    assert silver.loc[lines["escaped_quote"], "Country"] == 'C\u00f4te d"Ivoire'
    assert silver.loc[lines["quoted_newline_part_1"], "Country"] == "Congo, Democratic Republic of the\n(Kinshasa)"
    assert silver.loc[lines["good_after_unclosed"], "Country"] == "After"
    lookalike = silver.loc[lines["json_lookalike"]]
    assert lookalike["Country"] == 'x","event_id":"hijack'  # a value, not a field: the id is the producer's
    assert lookalike["event_id"] == ledger.lines[lines["json_lookalike"] - 2].event_id
    quarantine = lp.read_table(base / "build", lp.QUARANTINE_TABLE)
    quarantine = quarantine[quarantine["source_file"] == "lines.csv"]
    errors = dict(zip(quarantine["source_line"], quarantine["error"], strict=True))
    assert errors[lines["unclosed_quote"]] == "unclosed quote"  # the producer's reason reaches the table


def test_header_variants_give_the_same_row(pipeline_run):
    base, csvs, _ = pipeline_run
    silver = lp.read_table(base / "build", lp.SILVER_TABLE)
    # the same row is the same event whatever the header's form (ids come from the row's content), so
    # silver holds it once: these files and lines.csv's first row are one event
    ids = {name: [r.event_id for r in iter_records(csvs[name])]
           for name in ("bom_crlf.csv", "reordered.csv", "no_final_newline.csv", "lines.csv")}
    assert ids["bom_crlf.csv"] == ids["reordered.csv"] == ids["no_final_newline.csv"] == ids["lines.csv"][:1]
    values = silver.loc[silver["event_id"] == ids["bom_crlf.csv"][0], list(COLUMNS)]
    assert list(values.itertuples(index=False, name=None)) == [
        ("World", "WORLD", "Global", 2020, 9.6, 160.0, "Total", "5-17 years")]
    latin1 = build_ledger(csvs["latin1_export.csv"], tables=lp.table_reader(base / "build"))
    assert [(f.line, f.fate) for f in latin1.lines] == [(2, "silver"), (3, "quarantine (record_parsed)")]
    for name in ("bom_crlf.csv", "reordered.csv", "no_final_newline.csv"):
        assert build_ledger(csvs[name], tables=lp.table_reader(base / "build")).ok, name


# --- a 1 GB file: read in bounded memory -------------------------------------------------------------
# peak RSS from /proc (VmHWM): getrusage's ru_maxrss keeps the parent's peak across fork + exec
MEASURE = r"""
import re, sys, time
from pathlib import Path
from kinesis_lab.cloud.records import iter_records
started = time.monotonic()
records = data = oversize = 0
for record in iter_records(sys.argv[1]):
    records += 1
    data += len(record.data)
    oversize += record.kind == "oversize"
peak_kb = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)
print(records, data, oversize, peak_kb, round(time.monotonic() - started, 1))
"""


@pytest.mark.slow  # tens of seconds, no fixture says so
def test_a_1_gb_file_is_read_in_bounded_memory(tmp_path):
    """~1 GiB: 64 MiB of the course's short rows (about a million records), the rest wide rows
    (512 KiB each) and a few lines over 1 MiB. The reading path (hash, header, records) must keep
    its peak RSS (interpreter included) under 300 MB: holding even the short rows' records would not."""
    path = tmp_path / "big.csv"
    short = (GOOD + "\n").encode() * ((64 << 20) // (len(GOOD) + 1))
    wide = (row(Country="w" * (512 << 10)) + "\n").encode()
    huge = (row(Country="h" * (3 << 20)) + "\n").encode()
    with path.open("wb") as fh:
        fh.write(HEADER.encode() + b"\n")
        fh.write(short)
        size = fh.tell()
        wide_rows = huge_rows = 0
        while size < (1 << 30):
            if wide_rows % 400 == 399:
                fh.write(huge)
                huge_rows += 1
            fh.write(wide)
            wide_rows += 1
            size = fh.tell()
    short_rows = short.count(b"\n")
    del short
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=600, check=True
    )
    records, data, oversize, peak_kb, seconds = done.stdout.split()
    print(
        f"{path.stat().st_size / 2**30:.2f} GiB: {records} records, {int(data) / 2**30:.2f} GiB of record data, "
        f"peak RSS {int(peak_kb) / 1024:.0f} MB, {seconds} s"
    )
    assert int(records) == short_rows + wide_rows + huge_rows
    assert int(oversize) == huge_rows > 0
    assert int(data) > path.stat().st_size * 0.9  # everything was read and turned into records
    assert int(peak_kb) < 300 * 1024, f"peak RSS {int(peak_kb) / 1024:.0f} MB"
