"""1. The producer vs the original course's producer: same local stack, same data, identical records."""

from __future__ import annotations

import contextlib
import io
import json
import time
import uuid
from collections import Counter
from pathlib import Path

from common import COLUMNS, MIB, create_stream, dataset, load, read_stream, say


def original_producer(path: Path, stream_name: str, kinesis) -> dict:
    """The original course's producer, as it was (a Windows path aside): pandas read_csv of the whole file,
    iterrows, batches of 100, json.dumps(row) + "\\n", a random uuid4 partition key, put_records, sleep 0.1 s
    after each batch; prints FailedRecordCount and never resends."""
    import pandas as pd

    out = io.StringIO()
    failed = calls = 0
    with contextlib.redirect_stdout(out):
        df = pd.read_csv(path)
        records = []
        for _, row in df.iterrows():
            records.append({"Data": json.dumps(row.to_dict()) + "\n", "PartitionKey": str(uuid.uuid4())})
            if len(records) == 100:
                response = kinesis.put_records(StreamName=stream_name, Records=records)
                print(f"Batch sent. FailedRecordCount: {response['FailedRecordCount']}")
                failed += response["FailedRecordCount"]
                calls += 1
                records = []
                time.sleep(0.1)
        if records:
            response = kinesis.put_records(StreamName=stream_name, Records=records)
            print(f"Batch sent. FailedRecordCount: {response['FailedRecordCount']}")
            failed += response["FailedRecordCount"]
            calls += 1
            time.sleep(0.1)
    return {"failed": failed, "calls": calls, "printed_lines": out.getvalue().count("\n")}


def _float_text(value) -> str:
    return format(float(value), ".12g")  # "6.0", 6.0, "6.00" -> "6"; 1-ulp parser differences vanish


NORMALISE = {"Year": lambda v: str(int(str(v))), "Child_Labor_Rate_Percent": _float_text,
             "Estimated_Children_Millions": _float_text}


def row_key(body: dict) -> tuple:
    """The 8 CSV columns of a record, typed values (the original's) and raw text (ours) made comparable."""
    return tuple(NORMALISE.get(c, str)(body[c]) for c in COLUMNS)


def bench_producer_vs_original(ctx: dict) -> dict:
    from kinesis_lab.cloud.producer import produce_file

    rows = 5_000 if ctx["quick"] else 50_000
    path = dataset(rows)
    kinesis = ctx["kinesis"]
    tag = ctx["tag"]
    ours_stream, original_stream = f"bench-ours-{tag}", f"bench-original-{tag}"
    create_stream(kinesis, ours_stream)
    create_stream(kinesis, original_stream)
    say(f"  {rows:,} rows ({path.stat().st_size / MIB:.1f} MiB), two fresh ON_DEMAND streams; {load()}")

    started = time.perf_counter()
    ours = produce_file(path, stream_name=ours_stream, kinesis=kinesis, progress=False)
    ours_seconds = time.perf_counter() - started
    say(f"  ours:     {ours_seconds:7.2f} s  {ours.put_calls} calls  ({load()})")
    started = time.perf_counter()
    original = original_producer(path, original_stream, kinesis)
    original_seconds = time.perf_counter() - started
    say(f"  original: {original_seconds:7.2f} s  {original['calls']} calls, FailedRecordCount total "
        f"{original['failed']}  ({load()})")

    ctx["records_in_moto"] = ctx.get("records_in_moto", 0) + 2 * rows
    ours_rows = Counter(row_key(json.loads(d)) for d in read_stream(kinesis, ours_stream))
    original_rows = Counter(row_key(json.loads(d)) for d in read_stream(kinesis, original_stream))
    identical = ours_rows == original_rows and sum(ours_rows.values()) == rows
    speedup = original_seconds / ours_seconds
    passed = speedup >= 5 and identical
    figures = {
        "rows": rows, "ours_seconds": round(ours_seconds, 2), "original_seconds": round(original_seconds, 2),
        "speedup": round(speedup, 2), "ours_records_per_second": round(rows / ours_seconds),
        "original_records_per_second": round(rows / original_seconds), "ours_put_calls": ours.put_calls,
        "original_put_calls": original["calls"], "original_sleep_seconds": round(original["calls"] * 0.1, 1),
        "records_in_ours": sum(ours_rows.values()), "records_in_original": sum(original_rows.values()),
        "identical_records": identical,
        "differences": sum(((ours_rows - original_rows) + (original_rows - ours_rows)).values()),
    }
    say(f"  read back: {figures['records_in_ours']:,} and {figures['records_in_original']:,} records, "
        f"8 columns {'identical' if identical else 'DIFFERENT'} (multisets)")
    return {"figure": "producer end-to-end speed-up over the original course's producer", "correct": identical,
            "measured": f"{speedup:.1f}x ({ours_seconds:.1f} s vs {original_seconds:.1f} s), records identical: {identical}",
            "target": ">= 5x, identical records", "passed": passed, "figures": figures}
