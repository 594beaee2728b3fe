"""2. At the limit: a simulated per-shard capacity (token buckets), >= 90 % of it sustained, nothing lost;
beside the producer's previous sending loop."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from common import AWS_LIMITS, MIB, create_stream, dataset, load, read_stream, say


def previous_produce(path: Path, stream_name: str, kinesis, max_retry_seconds: float = 120.0) -> SimpleNamespace:
    """The producer's previous sending loop, for comparison: batches of 500 one after the other, each
    batch's failed entries resent after exponential backoff with full jitter (base 0.05 s, cap 2 s)
    per attempt, the next batch only once the batch is all delivered."""
    from kinesis_lab.cloud.batching import iter_batches
    from kinesis_lab.cloud.records import iter_records

    rng = random.Random(1)
    sent = failed_entries = calls = 0
    for batch in iter_batches(iter_records(path)):
        pending, attempt, give_up_at = batch, 0, None
        while pending:
            calls += 1
            response = kinesis.put_records(StreamName=stream_name, Records=[
                {"Data": r.data, "PartitionKey": r.partition_key} for r in pending])
            failed = [r for r, e in zip(pending, response["Records"], strict=True) if "ErrorCode" in e]
            sent += len(pending) - len(failed)
            failed_entries += len(failed)
            if not failed:
                break
            now = time.monotonic()
            give_up_at = give_up_at or now + max_retry_seconds
            pause = rng.uniform(0, min(2.0, 0.05 * 2**attempt))
            if now + pause > give_up_at:
                raise RuntimeError(f"{len(failed)} records not delivered")
            time.sleep(pause)
            pending, attempt = failed, attempt + 1
    return SimpleNamespace(records_sent=sent, failed_entries=failed_entries, put_calls=calls)


def bench_at_the_limit(ctx: dict) -> dict:
    from kinesis_lab.cloud.producer import produce_file
    from kinesis_lab.cloud.records import iter_records
    from kinesis_lab.local.throttling import ShardCapacity, ThrottlingSimulator

    rows = 5_000 if ctx["quick"] else 50_000
    side_rows = 2_000 if ctx["quick"] else 10_000
    per_shard = 500
    kinesis = ctx["kinesis"]
    say(f"  {AWS_LIMITS}")
    say(f"  simulated here: 4 shards x {per_shard} records/s (+ 1 MiB/s) = {4 * per_shard:,} records/s, "
        f"token buckets of 1 s starting empty; {rows:,} rows; {load()}")

    def run(name: str, path: Path, send, records_per_second: float = per_shard, random_rate: float = 0.0) -> dict:
        """Send ``path`` with ``send(stream)`` under the simulated capacity (+ random entry failures);
        read the stream back."""
        stream = f"bench-limit-{name}-{ctx['tag']}"
        create_stream(kinesis, stream)
        capacity = ShardCapacity.from_stream(kinesis, stream, records_per_second=records_per_second,
                                             bytes_per_second=MIB, burst_seconds=1.0, initial_fill=0.0)
        sim = ThrottlingSimulator(kinesis, random_rate, seed=3, capacity=capacity)
        sim.register()
        try:
            started = time.perf_counter()
            outcome = send(stream)
            seconds = time.perf_counter() - started
        finally:
            sim.unregister()
        stored = Counter(json.loads(d)["event_id"] for d in read_stream(kinesis, stream))
        ctx["records_in_moto"] = ctx.get("records_in_moto", 0) + sum(stored.values())
        expected = {r.event_id for r in iter_records(path)}
        sent, failed, calls = outcome.records_sent, outcome.failed_entries, outcome.put_calls
        limit = capacity.records_limit
        return {"rows": len(expected), "limit_records_per_second": limit, "seconds": round(seconds, 2),
                "achieved_records_per_second": round(sent / seconds), "achieved_share": round(sent / seconds / limit, 4),
                "lost": len(expected - set(stored)), "duplicates": sum(n - 1 for n in stored.values()),
                "failed_entries": failed, "failed_share_of_sent": round(failed / (failed + sent), 3),
                "put_calls": calls, "per_shard_admitted": dict(capacity.admitted)}

    def show(label: str, r: dict) -> None:
        say(f"  {label:34} {r['achieved_records_per_second']:5,} / {r['limit_records_per_second']:,.0f} records/s = "
            f"{r['achieved_share']:6.1%} in {r['seconds']:5.1f} s; lost {r['lost']}, dup {r['duplicates']}; "
            f"failed entries {r['failed_entries']:,} ({r['failed_share_of_sent']:.0%} of sent), {r['put_calls']} calls")

    def ours(path: Path):
        return lambda s: produce_file(path, stream_name=s, kinesis=kinesis, progress=False)

    def previous(path: Path):
        return lambda s: previous_produce(path, s, kinesis)

    main = run("ours", dataset(rows), ours(dataset(rows)))
    show("ours", main)
    say(f"  for comparison (INFO), {side_rows:,} rows each; {load()}:")
    side = dataset(side_rows)
    figures = {**main, "comparison": {
        "previous_same_capacity": run("prev", side, previous(side)),
        "ours_capacity_250_plus_10pct_random": run("ours-mixed", side, ours(side), 250, 0.1),
        "previous_capacity_250_plus_10pct_random": run("prev-mixed", side, previous(side), 250, 0.1),
    }}
    show("previous loop, same capacity", figures["comparison"]["previous_same_capacity"])
    show("ours, 4x250/s + 10 % random fails", figures["comparison"]["ours_capacity_250_plus_10pct_random"])
    show("previous, 4x250/s + 10 % random", figures["comparison"]["previous_capacity_250_plus_10pct_random"])
    say(f"  ({load()}; 'previous' = the producer's loop before this change: per-batch exponential backoff)")
    share, lost, duplicates = main["achieved_share"], main["lost"], main["duplicates"]
    passed = share >= 0.9 and lost == 0 and duplicates == 0
    return {"figure": "sustained share of a simulated capacity (4 shards x 500 records/s), nothing lost",
            "correct": lost == 0 and duplicates == 0,
            "measured": f"{main['achieved_records_per_second']}/{main['limit_records_per_second']:.0f} records/s = "
                        f"{share:.1%}, lost {lost}, duplicates {duplicates}",
            "target": ">= 90 %, 0 lost", "passed": passed, "figures": figures}
