"""7. The stack's limit: a bare `put_records` loop over pre-built 500-record batches, beside the producer
on the same rows (the producer's share of what the stack takes; >= 90 %)."""

from __future__ import annotations

import statistics
import time

from common import create_stream, dataset, load, say


def bare_put_records(batches: list[list[dict]], stream_name: str, kinesis) -> int:
    """As fast as a client can send: pre-built PutRecords calls, one after the other, nothing else."""
    failed = 0
    for entries in batches:
        failed += kinesis.put_records(StreamName=stream_name, Records=entries)["FailedRecordCount"]
    return failed


def bench_put_records_limit(ctx: dict) -> dict:
    import gc

    from kinesis_lab.cloud.batching import iter_batches
    from kinesis_lab.cloud.producer import produce_file
    from kinesis_lab.cloud.records import iter_records

    rows = 5_000 if ctx["quick"] else 50_000
    rounds = 1 if ctx["quick"] else 5
    path = dataset(rows)
    kinesis = ctx["kinesis"]

    def prebuilt() -> list[list[dict]]:
        """The producer's own records (same data, same partition keys), batched as it batches them."""
        return [[{"Data": r.data, "PartitionKey": r.partition_key} for r in batch]
                for batch in iter_batches(iter_records(path))]

    records, calls = sum(len(b) for b in prebuilt()), len(prebuilt())
    say(f"  {rows:,} rows -> {records:,} records in {calls} pre-built calls of <= 500; each side {rounds} "
        f"time(s), alternating, each into a fresh ON_DEMAND stream; the bare loop's calls are built before "
        f"its clock starts and dropped after it stops (so the producer's garbage collections do not walk "
        f"them); {load()}")
    bare_seconds, ours_seconds = [], []
    for n in range(rounds):
        for side in ("bare", "ours"):
            stream = f"bench-limit7-{side}-{n}-{ctx['tag']}"
            create_stream(kinesis, stream)
            batches = prebuilt() if side == "bare" else None
            gc.collect()
            started = time.perf_counter()
            if side == "bare":
                failed = bare_put_records(batches, stream, kinesis)
                bare_seconds.append(time.perf_counter() - started)
                assert failed == 0, f"moto refused {failed} records"
                del batches
            else:
                result = produce_file(path, stream_name=stream, kinesis=kinesis, progress=False)
                ours_seconds.append(time.perf_counter() - started)
                assert result.records_sent == records, (result.records_sent, records)
            ctx["records_in_moto"] = ctx.get("records_in_moto", 0) + records
            say(f"    round {n + 1} {side:5} {(bare_seconds if side == 'bare' else ours_seconds)[-1]:6.2f} s  ({load()})")
    bare, ours = statistics.median(bare_seconds), statistics.median(ours_seconds)
    share = bare / ours  # throughputs on the same records: (records / ours) / (records / bare)
    original = ctx.get("original_records_per_second")
    vs_original = (records / ours) / original if original else None
    say(f"  bare loop {records / bare:,.0f} records/s (the stack's limit for one client), producer "
        f"{records / ours:,.0f} records/s = {share:.1%} of it (medians)"
        + (f"; {vs_original:.1f}x the original course's producer of benchmark 1" if vs_original else ""))
    passed = share >= 0.9 and (vs_original is None or vs_original >= 5)
    return {"figure": "producer's share of a bare put_records loop on the same stack and rows",
            "measured": f"{share:.1%} ({records / ours:,.0f} vs {records / bare:,.0f} records/s)"
                        + (f", {vs_original:.1f}x the original" if vs_original else ""),
            "target": ">= 90 % of the bare loop (and >= 5x the original, benchmark 1)", "passed": passed,
            "correct": True,
            "figures": {"rows": rows, "records": records, "calls": calls,
                        "bare_seconds": [round(x, 2) for x in bare_seconds],
                        "ours_seconds": [round(x, 2) for x in ours_seconds],
                        "bare_records_per_second": round(records / bare),
                        "ours_records_per_second": round(records / ours), "share": round(share, 4),
                        "original_records_per_second": original,
                        "vs_original": round(vs_original, 2) if vs_original else None}}
