"""Performance benchmarks of the lab (issues 7 and 12), measured side by side on this machine.

    .venv/bin/python benchmarks/run.py [--quick] [--only N ...] [--fresh-setup]

1. producer vs the original course's producer (same local stack, same data, identical records)
2. at the limit: simulated per-shard capacity (token buckets), >= 90 % of it sustained, nothing lost
3. memory: peak RSS of a producer process for 1,000,000 rows vs 10,000 rows
4. the whole series: `kinesis-lab demo`, time per notebook, with and without notebook 00's Spark warm-up
5. local Firehose latency: put -> object visible in S3 with IntervalInSeconds=2
6. fresh setup: `make demo` in a fresh clone with a new .venv (only with --fresh-setup)
7. the stack's limit: a bare `put_records` loop over pre-built 500-record batches, beside the producer
   on the same rows (the producer's share of what the stack takes; >= 90 %)
8. the pipeline's overhead: a first and a second pipeline run on the shipped sample with the lab's Spark
   settings vs Spark's defaults for them (wall time and the Spark server's CPU)
9. make test's class archive: the time to make it, and a server's first and second run with and without it
10. an idle local stack's CPU: moto + the local Firehose service, one delivery stream, nothing put

Starts its own local stack (state under build/bench/stack, stopped at the end), prints every figure
with its target and PASS/FAIL, and writes build/bench/results.json (--quick: results-quick.json; with
--only, the other benchmarks' last figures are kept). Figures depend on the machine's load: the load
average is printed with each one.

Each benchmark is a module of its own (bench_<n>_<name>.py, a function taking the run's context and
returning its outcome); common.py holds what they share; this file is the command line.
"""


from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime

import bench_1_producer
import bench_2_at_the_limit
import bench_3_memory
import bench_4_demo
import bench_5_firehose_latency
import bench_6_fresh_setup
import bench_7_put_records_limit
import bench_8_pipeline_overhead
import bench_9_class_archive
import bench_10_idle_stack
from common import BENCH, REGION, REPO, RESULTS_JSON, RESULTS_QUICK_JSON, load, machine, say, verdict

# number -> (title, the benchmark, whether it needs the local stack)
BENCHMARKS = {
    1: ("Producer vs the original course's producer", bench_1_producer.bench_producer_vs_original, True),
    2: ("At the limit, without loss", bench_2_at_the_limit.bench_at_the_limit, True),
    3: ("Memory", bench_3_memory.bench_memory, True),
    4: ("The whole series (kinesis-lab demo)", bench_4_demo.bench_demo, False),
    5: ("Local Firehose latency", bench_5_firehose_latency.bench_firehose_latency, True),
    6: ("Fresh setup", bench_6_fresh_setup.bench_fresh_setup, False),
    7: ("The stack's limit: a bare put_records loop", bench_7_put_records_limit.bench_put_records_limit, True),
    8: ("The pipeline's overhead", bench_8_pipeline_overhead.bench_pipeline_overhead, False),
    9: ("make test's class archive", bench_9_class_archive.bench_class_archive, False),
    10: ("An idle local stack", bench_10_idle_stack.bench_idle_stack, True),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test (skips 4 unless --only 4)")
    parser.add_argument("--only", type=int, nargs="+", choices=sorted(BENCHMARKS), metavar="N",
                        help="run only these benchmarks")
    parser.add_argument("--fresh-setup", action="store_true", help="measure 6: make demo in a fresh clone")
    parser.add_argument("--memory-on-moto", action="store_true",
                        help="3 also sends the big file to the local moto (about 3 min and 1 GB of moto memory for 1M)")
    parser.add_argument("--memory-child", nargs=2, metavar=("CSV", "STREAM"), help=argparse.SUPPRESS)
    parser.add_argument("--noop-kinesis", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_one(n: int, ctx: dict, quick: bool) -> dict:
    """Benchmark ``n``: its outcome (an error is reported as a failed outcome), with its time and load."""
    title, func, _ = BENCHMARKS[n]
    say(f"\n[{n}] {title}")
    began, load_before = time.perf_counter(), os.getloadavg()
    try:
        outcome = func(ctx)
    except Exception as exc:  # report and go on with the next one
        outcome = {"figure": title, "measured": f"error: {type(exc).__name__}: {exc}", "target": "",
                   "passed": False, "correct": False, "figures": {}}
    if n == 1 and outcome["figures"].get("ours_records_per_second"):
        ctx["moto_records_per_second"] = outcome["figures"]["ours_records_per_second"]
        ctx["original_records_per_second"] = outcome["figures"]["original_records_per_second"]
    outcome.update(id=n, title=title, seconds=round(time.perf_counter() - began, 1),
                   measured_at=datetime.now(UTC).isoformat(timespec="seconds"), quick=quick,
                   loadavg_before=[round(x, 2) for x in load_before],
                   loadavg_after=[round(x, 2) for x in os.getloadavg()])
    say(f"  => {outcome['measured']}  [target {outcome['target']}]  {verdict(outcome['passed'])}")
    return outcome


def run_chosen(chosen: list[int], ctx: dict, quick: bool) -> list[dict]:
    """The chosen benchmarks in order, on a local stack of their own (state under build/bench/stack) if
    any of them needs one; the stack is stopped at the end."""
    import boto3

    from kinesis_lab.local import stack

    state_dir = BENCH / "stack"
    needs_stack = any(BENCHMARKS[n][2] for n in chosen)
    results = []
    try:
        if needs_stack:
            state, _ = stack.up(state_dir, REGION)
            ctx["endpoint"], ctx["moto_pid"] = state.endpoint, state.moto_pid
            os.environ.update(stack.local_env(state.endpoint, REGION))
            ctx["session"] = boto3.Session(region_name=REGION)
            ctx["kinesis"] = ctx["session"].client("kinesis")
            say(f"local stack: {state.endpoint} (moto pid {state.moto_pid}, firehose pid {state.firehose_pid})")
        for n in chosen:
            results.append(run_one(n, ctx, quick))
    finally:
        if needs_stack:
            stack.down(state_dir)
    return results


def write_results(results: list[dict], chosen: list[int], args: argparse.Namespace, started_at: datetime,
                  info: dict) -> None:
    """The summary table, and the figures as JSON (with --only, the other benchmarks' last ones kept)."""
    say("\n#  figure" + " " * 62 + "result")
    for r in results:
        say(f"{r['id']}  {r['measured'][:68]:68}  {verdict(r['passed'])}  (target {r['target']})")
    out = RESULTS_QUICK_JSON if args.quick else RESULTS_JSON  # a smoke test never replaces real figures
    kept = []
    if args.only and out.is_file():  # keep the other benchmarks' last figures
        with contextlib.suppress(ValueError, KeyError):
            previous = json.loads(out.read_text())
            kept = [r for r in previous["benchmarks"] if r["id"] not in chosen]
    out.write_text(json.dumps({
        "date": started_at.isoformat(timespec="seconds"), "quick": args.quick, "machine": info,
        "benchmarks": sorted(kept + results, key=lambda r: r["id"])}, indent=2, default=str))
    say(f"\nresults: {out.relative_to(REPO)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        bench_3_memory.memory_child(*args.memory_child)
        return 0
    if args.noop_kinesis:
        bench_3_memory.serve_noop_kinesis()
        return 0
    chosen = args.only or [n for n in BENCHMARKS if not (args.quick and n == 4)]
    BENCH.mkdir(parents=True, exist_ok=True)
    info = machine()
    started_at = datetime.now(UTC)
    say(f"kinesis-lab benchmarks, {started_at:%Y-%m-%d %H:%M} UTC{' (--quick)' if args.quick else ''}")
    say(f"machine: {info['cores']} cores ({info['cpu']}), {info['ram_gb']} GB RAM, Python {info['python']}, "
        f"{info['java']}, moto {info['moto']}; {load()}")
    ctx = {"quick": args.quick, "fresh_setup": args.fresh_setup, "memory_on_moto": args.memory_on_moto,
           "tag": uuid.uuid4().hex[:6]}
    results = run_chosen(chosen, ctx, args.quick)
    write_results(results, chosen, args, started_at, info)
    if args.quick:  # small sizes: the figures are indicative, only correctness decides the exit status
        say("--quick: sizes too small for the targets to be meaningful; exit status = correctness only "
            "(identical records, nothing lost, no error)")
        return 1 if any(r.get("correct", True) is False for r in results) else 0
    return 1 if any(r["passed"] is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
