"""The producer without a network: records, event ids, malformed lines, batching limits."""

from __future__ import annotations

import csv
import itertools
import json
import threading
import time
import uuid
from collections import Counter

import pytest
from waiting import wait_until

from kinesis_lab.cloud import read_ahead
from kinesis_lab.cloud.batching import MAX_BYTES_PER_CALL, RecordTooLargeError, iter_batches
from kinesis_lab.cloud.dataset import COLUMNS, SAMPLE_PATH
from kinesis_lab.cloud.producer import produce_file
from kinesis_lab.cloud.records import (
    MAX_RECORD_BYTES,
    HeaderError,
    Record,
    RecordReader,
    event_id_for,
    iter_records,
    record_content,
    scan_file,
)

HEADER = ",".join(COLUMNS)
GOOD = "World,WORLD,Global,2020,9.6,160.00,Total,5-17 years"
WHEN = "2024-05-01T12:00:00.000Z"


def write(tmp_path, text: str | bytes, name="rows.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def records_of(path):
    return list(iter_records(path, produced_at=WHEN))


def payload(record: Record) -> dict:
    assert record.data.endswith(b"\n") and record.data.count(b"\n") == 1
    return json.loads(record.data)


def test_sample_rows_become_raw_string_records():
    records = records_of(SAMPLE_PATH)
    with open(SAMPLE_PATH, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]
    assert len(records) == len(rows) == 540
    _, lines = scan_file(SAMPLE_PATH)
    assert lines == 541
    malformed = 0
    seen = Counter()
    for line, (record, row) in enumerate(zip(records, rows, strict=True), start=2):
        body = payload(record)
        content = record_content(row) if len(row) == len(COLUMNS) else record_content(raw=",".join(row))
        seen[content] += 1
        assert body["event_id"] == record.event_id == record.partition_key == event_id_for(content, seen[content])
        assert body["source_file"] == "child_labor_statistics_sample.csv"
        assert body["source_line"] == line and body["produced_at"] == WHEN and record.line == line
        if len(row) != len(COLUMNS):  # the sample's line with an unquoted comma: a marker record
            malformed += 1
            assert record.kind == "malformed" and body["error"] == f"too many fields ({len(row)}, expected 8)"
            continue
        assert record.kind == "row" and not record.malformed
        assert [body[c] for c in COLUMNS] == row  # raw strings, no typing
        assert list(body) == [*COLUMNS, "event_id", "source_file", "source_line", "produced_at"]
    assert malformed == 1  # as data/README.md says


def test_event_ids_are_deterministic(tmp_path):
    text = f"{HEADER}\n{GOOD}\n{GOOD}\n"
    first = [r.event_id for r in records_of(write(tmp_path, text, "a.csv"))]
    again = [r.event_id for r in iter_records(write(tmp_path, text, "b.csv"))]  # other name, other time
    changed = [r.event_id for r in records_of(write(tmp_path, text.replace("9.6", "9.7"), "c.csv"))]
    assert first == again
    assert first[0] != first[1]  # identical rows: both kept, each its own id
    assert set(first).isdisjoint(changed)  # other content
    assert all(uuid.UUID(i).version == 5 for i in first)


def test_appending_or_fixing_a_row_changes_only_that_rows_id(tmp_path):
    rows = [GOOD, GOOD.replace("World,WORLD,Global", "Nepal,NPL,Asia"), GOOD, GOOD.replace("9.6", "N/A")]
    before = [r.event_id for r in records_of(write(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n", "a.csv"))]
    appended = rows + [GOOD.replace("2020", "2021")]
    after = [r.event_id for r in records_of(write(tmp_path, HEADER + "\n" + "\n".join(appended) + "\n", "b.csv"))]
    assert after[:4] == before and after[4] not in before
    fixed = [rows[0], rows[1], rows[2], GOOD.replace("9.6", "9.5")]
    again = [r.event_id for r in records_of(write(tmp_path, HEADER + "\n" + "\n".join(fixed) + "\n", "c.csv"))]
    assert again[:3] == before[:3] and again[3] not in before
    # a blank line or a row inserted before changes nothing either: ids do not depend on line numbers
    moved = [r.event_id for r in records_of(write(tmp_path, HEADER + "\n\n" + "\n".join(rows) + "\n", "d.csv"))]
    assert moved == before


def test_a_quoted_field_may_span_lines_rfc_4180(tmp_path):
    congo = '"Congo, Democratic Republic of the\n(Kinshasa)",COD,Sub-Saharan Africa,2010,30.5,1.5,Total,5-17 years'
    quote = '"Say ""hi""\r\n twice",SAY,Other,2011,1.0,0.1,Total,5-17 years'
    path = write(tmp_path, f"{HEADER}\n{congo}\n{GOOD}\n{quote}\n{GOOD}\n")
    records = records_of(path)
    assert [(r.line, r.last_line, r.kind) for r in records] == [(2, 3, "row"), (4, 4, "row"), (5, 6, "row"),
                                                                (7, 7, "row")]
    assert payload(records[0])["Country"] == "Congo, Democratic Republic of the\n(Kinshasa)"
    assert payload(records[0])["source_line"] == 2
    assert payload(records[2])["Country"] == 'Say "hi"\n twice'


def test_an_unclosed_quote_is_one_malformed_line_and_the_rest_is_read_as_usual(tmp_path):
    path = write(tmp_path, f'{HEADER}\n"Open quote,XXX,Other,2010,1,1,Total,5-17 years\n{GOOD}\n\n{GOOD}\n')
    records = records_of(path)
    assert [(r.line, r.kind) for r in records] == [(2, "malformed"), (3, "row"), (5, "row")]
    assert payload(records[0])["error"] == "unclosed quote"


def test_an_unclosed_quote_gives_up_after_1_mib(tmp_path):
    filler = "\n".join([GOOD] * (MAX_RECORD_BYTES // len(GOOD) + 10))  # over 1 MiB of good rows after it
    path = write(tmp_path, f'{HEADER}\n"Open,XXX,Other,2010,1,1,Total,5-17 years\n{filler}\n')
    records = records_of(path)
    assert records[0].kind == "malformed" and records[0].line == 2
    assert all(r.kind == "row" for r in records[1:]) and len(records) == 1 + filler.count("\n") + 1


def test_produced_at_defaults_to_now_in_utc(tmp_path):
    body = payload(next(iter_records(write(tmp_path, f"{HEADER}\n{GOOD}\n"))))
    assert body["produced_at"].endswith("Z") and body["produced_at"][:2] == "20"


def test_malformed_lines_travel_as_markers(tmp_path):
    lines = [
        HEADER,
        GOOD + ",extra",  # 2: too many fields
        "World,WORLD,Global,2020",  # 3: too few
        GOOD.replace("World", "C\xf4te"),  # 4: latin-1 byte, not UTF-8 (written below)
        '"Korea, Republic of,KOR,Asia,2020,1.0,0.1,Total,5-17 years',  # 5: unclosed quote
        GOOD,  # 6: fine: the open quote above did not swallow it
        '"World"x,WORLD,Global,2020,9.6,160.00,Total,5-17 years',  # 7: text after a closing quote
    ]
    raw = "\n".join(lines).encode("utf-8").replace("C\xf4te".encode(), b"C\xf4te") + b"\n"
    records = records_of(write(tmp_path, raw))
    assert [r.line for r in records] == [2, 3, 4, 5, 6, 7]
    assert [r.kind for r in records] == ["malformed"] * 4 + ["row", "malformed"]
    bodies = [payload(r) for r in records]
    assert [b.get("error") for b in bodies] == [
        "too many fields (9, expected 8)",
        "too few fields (4, expected 8)",
        "not valid UTF-8 (byte 0xf4 at byte 2)",
        "unclosed quote",
        None,
        "CSV syntax: ',' expected after '\"'",
    ]
    assert bodies[0]["raw_line"] == GOOD + ",extra"
    assert bodies[2]["raw_line"] == GOOD.replace("World", "C\ufffdte")  # invalid byte replaced
    assert bodies[3]["malformed"] is True and bodies[3]["source_line"] == 5
    assert set(bodies[0]) == {"event_id", "source_file", "source_line", "produced_at", "malformed", "error",
                              "raw_line"}
    assert bodies[4]["Country"] == "World"


def test_bom_crlf_quoted_commas_and_non_ascii(tmp_path):
    rows = [
        '"Congo, Democratic Republic of the",COD,Sub-Saharan Africa,2019,38.1,11.40,Boys,5-17 years',
        "Côte d'Ivoire,CIV,Sub-Saharan Africa,2016,31.5,2.64,Girls,7-14 years",
        '"São Tomé and Príncipe",STP,Sub-Saharan Africa,2014,15.2,0.01,Total,5-17 years',
        'Türkiye,TUR,Other,2012,4.4,"0.97",Male,"5-17 years"',
    ]
    path = write(tmp_path, ("\ufeff" + HEADER + "\r\n" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    bodies = [payload(r) for r in records_of(path)]
    assert [b["Country"] for b in bodies] == [
        "Congo, Democratic Republic of the", "Côte d'Ivoire", "São Tomé and Príncipe", "Türkiye"]
    assert bodies[0]["Country_Code"] == "COD" and bodies[3]["Age_Group"] == "5-17 years"  # no "\r" left
    assert bodies[3]["Estimated_Children_Millions"] == "0.97"
    assert "Côte d'Ivoire".encode() in records_of(path)[1].data  # UTF-8 in the record, not \u escapes


def test_reordered_header_gives_canonical_records(tmp_path):
    order = list(reversed(COLUMNS))
    values = dict(zip(COLUMNS, GOOD.split(","), strict=True))
    path = write(tmp_path, ",".join(order) + "\n" + ",".join(values[c] for c in order) + "\n")
    body = payload(records_of(path)[0])
    assert [body[c] for c in COLUMNS] == GOOD.split(",")
    assert list(body)[:8] == list(COLUMNS)


def test_header_missing_a_column_is_refused_before_reading(tmp_path):
    path = write(tmp_path, HEADER.replace(",Gender", "") + "\n" + GOOD + "\n", "bad_header.csv")
    with pytest.raises(HeaderError) as err:
        iter_records(path)
    assert str(err.value) == (
        "bad_header.csv: the header does not match the course's columns: missing column(s): Gender. "
        "Expected (any order): Country, Country_Code, Region, Year, Child_Labor_Rate_Percent, "
        "Estimated_Children_Millions, Gender, Age_Group"
    )


def test_a_first_line_over_one_mib_is_not_read_whole(tmp_path):
    path = write(tmp_path, b"x" * (3 * 1024 * 1024), "no_newline.csv")
    with pytest.raises(HeaderError, match="^no_newline.csv: the first line is over 1 MiB: not a CSV header$"):
        RecordReader(path)


def test_empty_header_only_and_blank_lines(tmp_path):
    assert records_of(write(tmp_path, "", "empty.csv")) == []
    assert records_of(write(tmp_path, HEADER + "\n", "header.csv")) == []
    reader = RecordReader(write(tmp_path, f"{HEADER}\n\n{GOOD}\n  \n{GOOD}", "blanks.csv"))
    assert [r.line for r in reader] == [3, 5]  # last line without "\n" still counts
    assert reader.blank_lines == 2 and reader.data_lines == 4
    with pytest.raises(FileNotFoundError, match="CSV file not found"):
        RecordReader(tmp_path / "missing.csv")


def test_lines_over_one_mib_become_oversize_markers(tmp_path):
    huge = "x" * (MAX_RECORD_BYTES + 10)  # the line itself is over 1 MiB
    escaped = "\\" * (600 * 1024)  # 600 KiB line, but JSON doubles every backslash
    text = f"{HEADER}\n{GOOD.replace('World', huge)}\n{GOOD.replace('World', escaped)}\n{GOOD}\n"
    records = records_of(write(tmp_path, text))
    assert [(r.line, r.kind) for r in records] == [(2, "oversize"), (3, "oversize"), (4, "row")]
    first, second = payload(records[0]), payload(records[1])
    assert first["error"] == f"record over 1 MiB (line of {len(GOOD) - 5 + len(huge)} bytes)"
    assert first["raw_line"] == huge[:4096] and first["malformed"] is True
    assert second["error"].startswith("record over 1 MiB (") and second["raw_line"] == escaped[:4096]
    assert all(r.size <= MAX_RECORD_BYTES for r in records)


def fake(size: int, line: int, key: str = "k" * 36) -> Record:
    """A record of exactly ``size`` bytes, partition key included."""
    return Record(b"x" * (size - len(key)), key, key, line)


def test_batches_hold_at_most_500_records():
    batches = list(iter_batches(fake(100, n) for n in range(1001)))
    assert [len(b) for b in batches] == [500, 500, 1]
    assert [r.line for b in batches for r in b] == list(range(1001))
    assert [len(b) for b in iter_batches(fake(100, n) for n in range(500))] == [500]


def test_batches_count_partition_keys_toward_five_mib():
    half = 512 * 1024
    exact = [fake(half, n) for n in range(10)]  # 10 x 512 KiB = 5 MiB exactly, keys included
    assert sum(r.size for r in exact) == MAX_BYTES_PER_CALL
    assert [len(b) for b in iter_batches(exact)] == [10]
    # data alone would still fit in 5 MiB; with the partition keys it does not
    over = [fake(half + 4, n) for n in range(10)]
    assert sum(len(r.data) for r in over) <= MAX_BYTES_PER_CALL < sum(r.size for r in over)
    assert [len(b) for b in iter_batches(over)] == [9, 1]


def test_a_record_over_one_mib_is_refused_by_the_batcher():
    assert [len(b) for b in iter_batches([fake(MAX_RECORD_BYTES, 7)])] == [1]
    with pytest.raises(RecordTooLargeError) as err:
        list(iter_batches([fake(10, 6), fake(MAX_RECORD_BYTES + 1, 7)]))
    assert str(err.value) == (
        "line 7: record of 1048577 bytes (data + partition key) is over the 1048576-byte limit per record")
    with pytest.raises(ValueError, match="max_records must be 1..500"):
        list(iter_batches([], max_records=501))


class AcceptAll:
    """A stand-in Kinesis client that accepts every entry."""

    def put_records(self, StreamName, Records):
        return {"Records": [{"ShardId": "shardId-000000000000", "SequenceNumber": "1"} for _ in Records]}


def test_progress_bar_ends_at_every_line_and_is_silent_when_off(tmp_path, capsys):
    path = write(tmp_path, "\n".join([HEADER, GOOD, "", "bad,line", GOOD]) + "\n")
    result = produce_file(path, stream_name="s", kinesis=AcceptAll())
    assert result.records_sent == 3 and result.blank_lines == 1
    err = capsys.readouterr().err  # outside Jupyter: tqdm on stderr, ending at every data line
    assert "rows.csv -> s: 100%" in err and "4/4" in err and "row/s" in err
    produce_file(path, stream_name="s", kinesis=AcceptAll(), progress=False)
    assert capsys.readouterr() == ("", "")


def test_the_producer_cuts_its_calls_where_iter_batches_does(tmp_path):
    widths = [300_000, 10, 700_000, 5, 400_000, 200_000] * 3  # cut by bytes and by count
    path = write(tmp_path, HEADER + "\n" + "\n".join(GOOD.replace("World", "x" * n) for n in widths) + "\n")
    calls = []

    class Recording(AcceptAll):
        def put_records(self, StreamName, Records):  # noqa: N803 (boto3's names)
            calls.append([r["PartitionKey"] for r in Records])
            return super().put_records(StreamName, Records)

    produce_file(path, stream_name="s", kinesis=Recording(), progress=False, batch_size=4, max_batch_bytes=1_200_000)
    batches = [[r.event_id for r in b] for b in iter_batches(iter_records(path), 4, 1_200_000)]
    assert calls == batches and len(batches) > len(widths) / 4


def test_the_producer_does_not_import_the_local_stand_ins():
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, kinesis_lab.cloud.producer; print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True).stdout.split()
    stand_ins = {"kinesis_lab.local.throttling", "kinesis_lab.local.moto_server", "kinesis_lab.local.pipeline",
                 "kinesis_lab.local.firehose", "moto"}
    assert stand_ins.isdisjoint(loaded)


# --- reading ahead of the calls ----------------------------------------------------------------------
def test_read_ahead_keeps_the_order_and_raises_where_the_error_is():
    def items():
        yield from range(120)
        raise ValueError("line 122 is bad")

    out: list[int] = []
    with pytest.raises(ValueError, match="line 122 is bad"):
        for item in read_ahead.read_ahead(items(), lambda n: n * 2, threading.Event()):
            out.append(item)
    assert out == [n * 2 for n in range(120)]


def endless_items(read: list[int]):
    """0, 1, 2, ... for ever, each noted in ``read`` when it is taken."""
    for n in itertools.count():
        read.append(n)
        yield n


def allowed_now() -> threading.Event:
    allowed = threading.Event()
    allowed.set()
    return allowed


def test_read_ahead_holds_a_bounded_number_of_items_and_stops_when_closed():
    read: list[int] = []
    items, allowed = endless_items(read), allowed_now()
    ahead = read_ahead.read_ahead(items, lambda n: n, allowed)
    assert next(ahead) == 0
    bound = read_ahead.CHUNK * (read_ahead.CHUNKS + 2)  # queued + being built + being used
    wait_until(lambda: len(read) >= read_ahead.CHUNK * read_ahead.CHUNKS, "the read-ahead thread to fill its queue")
    assert len(read) <= bound
    ahead.close()
    wait_until(lambda: not [t for t in threading.enumerate() if t.name == read_ahead.THREAD_NAME],
               "the read-ahead thread to stop")
    assert len(read) <= bound


def test_a_record_over_the_call_limit_fails_after_the_lines_before_it_are_sent(tmp_path):
    """The read-ahead thread meets the record first: the error comes out where the record is."""
    rows = [GOOD] * 150 + [GOOD.replace("World", "W" * 3000)] + [GOOD] * 10
    path = write(tmp_path, "\n".join([HEADER, *rows]) + "\n")
    sent: list[dict] = []

    class Counting(AcceptAll):
        def put_records(self, StreamName, Records):
            sent.extend(Records)
            return super().put_records(StreamName, Records)

    with pytest.raises(RecordTooLargeError, match="line 152: record of"):
        produce_file(path, stream_name="s", kinesis=Counting(), progress=False, max_batch_bytes=2000)
    lines = [json.loads(r["Data"])["source_line"] for r in sent]
    # the full calls before it went, in order (the call being filled when it was met did not)
    assert lines == list(range(2, 2 + len(lines))) and 140 <= len(lines) < 151
    assert not [t for t in threading.enumerate() if t.name == read_ahead.THREAD_NAME]


def test_read_ahead_of_wide_items_is_bounded_by_their_size():
    read: list[int] = []
    items, allowed = endless_items(read), allowed_now()
    ahead = read_ahead.read_ahead(items, lambda n: n, allowed, size=lambda _: 512 * 1024)  # a chunk each
    assert next(ahead) == 0
    wait_until(lambda: len(read) >= read_ahead.CHUNKS, "the read-ahead thread to fill its queue")
    assert len(read) <= read_ahead.CHUNKS + 2  # queued + being built + being used: not CHUNK x CHUNKS
    ahead.close()


class SlowAndStubborn(AcceptAll):
    """Answers after 50 ms (a network's latency: the read-ahead thread works meanwhile) and fails line 2's
    record its first 10 times (the delivered records behind it wait for it to be committed)."""

    def __init__(self):
        self.refused = 0

    def put_records(self, StreamName, Records):
        time.sleep(0.05)
        answers = []
        for entry in Records:
            if self.refused < 10 and json.loads(entry["Data"])["source_line"] == 2:
                self.refused += 1
                answers.append({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"})
            else:
                answers.append({"ShardId": "shardId-000000000000", "SequenceNumber": "1"})
        return {"FailedRecordCount": sum("ErrorCode" in a for a in answers), "Records": answers}


def test_wide_rows_are_sent_in_bounded_memory(tmp_path):
    """160 rows of ~400 KiB (64 MiB), one of them refused 10 times while the rest go through: what is read
    ahead is bounded in bytes, and a delivered record waiting to be committed lets go of its data, so the
    producer holds a few calls' worth, not the file."""
    import tracemalloc

    wide = GOOD.replace("World", "W" * 400_000)
    path = write(tmp_path, "\n".join([HEADER, *[wide] * 160]) + "\n")
    kinesis = SlowAndStubborn()
    tracemalloc.start()
    try:
        result = produce_file(path, stream_name="s", kinesis=kinesis, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.records_sent == 160 and result.failed_entries == 10 and kinesis.refused == 10
    assert peak < 32 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB for a 64 MiB file"
