"""The shipped synthetic sample, finding a dataset, and checking its header."""

from __future__ import annotations

import csv
import subprocess
import sys
import types

import pytest

from kinesis_lab.cloud import dataset
from kinesis_lab.cloud.dataset import COLUMNS, SAMPLE_PATH, DatasetError, check_columns, load_dataset, preview

HEADER = ",".join(COLUMNS)


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_shipped_sample_is_what_the_script_generates(tmp_path):
    out = tmp_path / "sample.csv"
    done = subprocess.run(
        [sys.executable, str(SAMPLE_PATH.parent / "generate_sample.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote 540 synthetic rows" in done.stdout
    assert out.read_bytes() == SAMPLE_PATH.read_bytes()


def test_generator_honours_rows_and_seed(tmp_path):
    a = dataset.generate_synthetic_sample(tmp_path / "a.csv", rows=100, seed=1)
    b = dataset.generate_synthetic_sample(tmp_path / "b.csv", rows=100, seed=2)
    assert len(read_rows(a)) == 101
    assert a.read_bytes() != b.read_bytes()
    with pytest.raises(ValueError, match="rows must be at least 1, got 0"):
        dataset.generate_synthetic_sample(tmp_path / "c.csv", rows=0)


def test_sample_has_the_real_files_shape_and_quirks():
    raw = SAMPLE_PATH.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8")
    assert b"\r" not in raw
    assert '"Korea, Republic of"' in text and '"Congo, Democratic Republic of the"' in text
    rows = read_rows(SAMPLE_PATH)
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) - 1 == 540
    # the dirty rows are there, once each, and the one malformed line has 9 fields
    assert sum(1 for r in rows[1:] if len(r) != 8) == 1
    assert dataset.MALFORMED_LINE + "\n" in text
    for dirty in dataset.DIRTY_ROWS:
        assert rows.count(dirty) == 1, dirty
    data = [r for r in rows[1:] if len(r) == 8 and r not in dataset.DIRTY_ROWS]
    countries = {r[0] for r in data}
    assert {"Côte d'Ivoire", "Türkiye", "São Tomé and Príncipe", "Korea, Republic of"} <= countries
    assert ("World", "WORLD", "Global") in {(r[0], r[1], r[2]) for r in data}
    assert all(len(r[1]) == 3 and r[1].isupper() for r in data if r[1] != "WORLD")
    assert {r[2] for r in data} >= {
        "Sub-Saharan Africa",
        "Asia and the Pacific",
        "Latin America and the Caribbean",
        "Other",
        "Global",
    }
    assert {r[6] for r in data} == {"Total", "Female", "Male", "Boys", "Girls"}
    assert {r[7] for r in data} == {"7-14 years", "5-17 years"}
    for r in data:
        assert 2000 <= int(r[3]) <= 2024
        assert 0 <= float(r[4]) <= 100 and len(r[4].split(".")[1]) == 1
        assert float(r[5]) >= 0
    keys = [(r[0], r[3], r[6], r[7]) for r in data]
    assert len(set(keys)) < len(keys)  # no natural key
    assert len({tuple(r) for r in data}) < len(data)  # exact duplicate rows too


def test_sample_genders_five_valid_spellings_and_one_dirty():
    rows = read_rows(SAMPLE_PATH)[1:]
    assert {r[6] for r in rows if len(r) == 8} == {"Total", "Female", "Male", "Boys", "Girls", "Unknown"}
    assert [r for r in rows if len(r) == 8 and r[6] == "Unknown"] == [dataset.DIRTY_ROWS[3]]


def test_real_like_sample_every_row_valid_with_aggregates(tmp_path):
    path = dataset.generate_synthetic_sample(tmp_path / "real.csv", rows=537, seed=14, aggregates=True)
    again = dataset.generate_synthetic_sample(tmp_path / "again.csv", rows=537, seed=14, aggregates=True)
    assert path.read_bytes() == again.read_bytes()
    assert check_columns(path) == []
    rows = read_rows(path)
    assert tuple(rows[0]) == COLUMNS and len(rows) - 1 == 537
    data = rows[1:]
    assert all(len(r) == 8 and all(v.strip() == v and v for v in r) for r in data)  # no missing value
    for r in data:
        assert 2000 <= int(r[3]) <= 2024
        assert 0 <= float(r[4]) <= 100 and float(r[5]) >= 0
        assert r[6] in dataset.GENDERS and r[7] in dataset.AGE_GROUPS
    aggregates = [r for r in data if r[1] in ("WORLD", "REGION")]
    countries = [r for r in data if r not in aggregates]
    assert all(len(r[1]) == 3 and r[1].isalpha() and r[1].isupper() for r in countries)
    assert {(r[0], r[1], r[2]) for r in aggregates} == {
        ("World", "WORLD", "Global"),
        *((name, "REGION", region) for name, _, region, *_ in dataset.REGION_AGGREGATES),
    }
    assert all(r[0] == r[2] for r in aggregates if r[1] == "REGION")  # Country = Region = the region's name
    # every aggregate is published for every year and gender, the first age group
    for name in {r[0] for r in aggregates}:
        published = {(int(r[3]), r[6]) for r in aggregates if r[0] == name and r[7] == "5-17 years"}
        assert published == {(y, g) for y in dataset.AGGREGATE_YEARS for g in dataset.AGGREGATE_GENDERS}, name
    regions = {r[2] for r in countries}
    assert dataset.AGGREGATE_ONLY_REGION not in regions and "Global" not in regions
    assert {r[2] for r in aggregates if r[1] == "REGION"} - regions == {dataset.AGGREGATE_ONLY_REGION}


def test_real_like_sample_needs_room_for_a_country(tmp_path):
    # 61 rows = 60 drawn + 1 duplicate: the 60 aggregate rows take every drawn row
    with pytest.raises(ValueError, match="rows=61 leaves no room for a country next to the 60 aggregate rows"):
        dataset.generate_synthetic_sample(tmp_path / "small.csv", rows=61, aggregates=True)
    small = dataset.generate_synthetic_sample(tmp_path / "small.csv", rows=62, aggregates=True)
    assert len(read_rows(small)) - 1 == 62


def test_real_like_sample_from_the_script(tmp_path):
    out = tmp_path / "real.csv"
    done = subprocess.run(
        [sys.executable, str(SAMPLE_PATH.parent / "generate_sample.py"), "--clean", "--aggregates",
         "--rows", "537", "--seed", "14", "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote 537 synthetic rows" in done.stdout
    expected = dataset.generate_synthetic_sample(tmp_path / "expected.csv", rows=537, seed=14, aggregates=True)
    assert out.read_bytes() == expected.read_bytes()


def test_load_dataset_sample_and_paths(tmp_path):
    assert load_dataset() == SAMPLE_PATH
    assert load_dataset("sample") == SAMPLE_PATH
    assert load_dataset(str(SAMPLE_PATH)) == SAMPLE_PATH
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path / "nope.csv")
    assert (
        str(err.value)
        == f"dataset file not found: {tmp_path / 'nope.csv'} (give a CSV path, 'sample' or 'kaggle')"
    )


def test_load_dataset_kaggle_without_kagglehub_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # import kagglehub -> ImportError
    with pytest.raises(DatasetError) as err:
        load_dataset("kaggle")
    assert "pip install 'kinesis-lab[kaggle]'" in str(err.value)
    assert "source='sample'" in str(err.value)


def test_load_dataset_kaggle_unreachable_and_found(monkeypatch, tmp_path):
    def unreachable(handle):
        raise ConnectionError("no route to host")

    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(dataset_download=unreachable))
    with pytest.raises(DatasetError) as err:
        load_dataset("kaggle")
    assert str(err.value).startswith(
        "could not download shaistashahid/child-labor-statistics from Kaggle (ConnectionError: no route to host)"
    )
    assert "source='sample'" in str(err.value)

    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    (tmp_path / "child_labor.csv").write_text(HEADER + "\n")
    calls = []
    monkeypatch.setitem(
        sys.modules,
        "kagglehub",
        types.SimpleNamespace(dataset_download=lambda h: calls.append(h) or str(tmp_path)),
    )
    assert load_dataset("kaggle") == tmp_path / "child_labor.csv"
    assert calls == ["shaistashahid/child-labor-statistics"]


def test_check_columns(tmp_path):
    def header(text: str, name="f.csv", raw: bytes | None = None):
        path = tmp_path / name
        path.write_bytes(raw if raw is not None else text.encode("utf-8"))
        return check_columns(path)

    assert check_columns(SAMPLE_PATH) == []
    assert header(",".join(reversed(COLUMNS)) + "\n") == []  # order does not matter
    assert header("\ufeff" + HEADER + "\r\n") == []  # BOM and CRLF
    assert header(HEADER.replace(",Age_Group", "") + "\n") == ["missing column(s): Age_Group"]
    assert header(HEADER.replace("Gender", "gender") + ",Notes\n") == [
        "missing column(s): Gender",
        "unexpected column(s): 'gender', 'Notes'",
        "column 'gender' should be spelled 'Gender' (names are case-sensitive)",
    ]
    assert header(HEADER + ",Year\n") == ["duplicate column(s): Year"]
    assert header("") == ["the file is empty (no header line)"]
    assert header("\n") == ["the header line is empty"]
    assert header("", raw=b"Country,\xff\n") == ["the header line is not valid UTF-8"]
    assert header("", raw=b"x" * (2 * 1024 * 1024)) == ["the first line is over 1 MiB: not a CSV header"]


def test_preview_keeps_raw_text(tmp_path):
    frame = preview(SAMPLE_PATH, n=5)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 5
    assert all(dtype.kind == "O" for dtype in frame.dtypes)
    path = tmp_path / "na.csv"
    path.write_text(HEADER + "\nWorld,WORLD,Global,2020,N/A,,Total,5-17 years\n", encoding="utf-8")
    row = preview(path).iloc[0]
    assert row["Child_Labor_Rate_Percent"] == "N/A" and row["Estimated_Children_Millions"] == ""
    assert preview(path, raw=False)["Year"].dtype.kind == "i"
