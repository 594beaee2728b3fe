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

Starts its own local stack (state under build/bench/stack, stopped at the end), prints every figure
with its target and PASS/FAIL, and writes build/bench/results.json (--quick: results-quick.json; with
--only, the other benchmarks' last figures are kept). Figures depend on the machine's load: the load
average is printed with each one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "build" / "bench"
RESULTS_JSON = BENCH / "results.json"
RESULTS_QUICK_JSON = BENCH / "results-quick.json"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
REGION = "us-east-1"
MIB = 1024 * 1024
COLUMNS = ("Country", "Country_Code", "Region", "Year", "Child_Labor_Rate_Percent",
           "Estimated_Children_Millions", "Gender", "Age_Group")
AWS_LIMITS = ("AWS real limits: 1 MiB/s or 1,000 records/s per shard; an on-demand stream starts at "
              "4 MB/s or 4,000 records/s (4 shards)")


# --- helpers -----------------------------------------------------------------------------------------
def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} on {os.cpu_count()} cores"


def say(text: str = "") -> None:
    print(text, flush=True)


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "INFO"}[passed]


def machine() -> dict:
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30).stderr.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        java = "not found"
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    import boto3
    import moto

    return {"cores": os.cpu_count(), "cpu": cpu, "ram_gb": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), "java": java, "platform": platform.platform(),
            "boto3": boto3.__version__, "moto": moto.__version__}


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process, from /proc (None if unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def clean_env(**extra: str) -> dict:
    """This process's environment without the lab's and AWS's settings (a subprocess sets its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAB_"))}
    env.update(extra)
    return env


def create_stream(kinesis, name: str) -> None:
    kinesis.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})


def read_stream(kinesis, name: str) -> list[bytes]:
    """The data of every record of every shard (get_records, from TRIM_HORIZON)."""
    out: list[bytes] = []
    for shard in kinesis.list_shards(StreamName=name)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=name, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while True:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            if not page["Records"]:
                break
            out += [r["Data"] for r in page["Records"]]
            iterator = page["NextShardIterator"]
    return out


def dataset(rows: int) -> Path:
    """A synthetic CSV of ``rows`` rows under build/bench (made once per size)."""
    from kinesis_lab.cloud.dataset import generate_synthetic_sample

    path = BENCH / f"rows_{rows}.csv"
    if not path.is_file():
        generate_synthetic_sample(path, rows=rows, seed=7, dirty=False)
    return path


def repeated_dataset(rows: int) -> Path:
    """A CSV of ``rows`` rows made fast by repeating a 10,000-row synthetic file's rows."""
    path = BENCH / f"repeated_{rows}.csv"
    if path.is_file():
        return path
    lines = dataset(10_000).read_bytes().splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        fh.write(header)
        left = rows
        while left:
            chunk = body[:left]
            fh.write(b"".join(chunk))
            left -= len(chunk)
    tmp.replace(path)
    return path


# --- 1. producer vs the original course's producer -----------------------------------------------------
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


# --- 2. at the limit, without loss -------------------------------------------------------------------
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


# --- 3. memory -----------------------------------------------------------------------------------------
def memory_child(csv_path: str, stream: str) -> None:
    """Child process: produce one file, print the peak RSS as JSON (own process only)."""
    import boto3

    from kinesis_lab.cloud.producer import produce_file

    def vm(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    kinesis = boto3.client("kinesis", region_name=REGION)
    before = vm("VmHWM")
    started = time.perf_counter()
    result = produce_file(csv_path, stream_name=stream, kinesis=kinesis, progress=False)
    # VmHWM, not getrusage's ru_maxrss: on Linux that one keeps the high-water mark from before exec,
    # i.e. of the forked benchmark process
    print(json.dumps({"peak_rss_mb": round(vm("VmHWM") / 1024, 1),
                      "rss_before_producing_mb": round(before / 1024, 1), "records": result.records_sent,
                      "seconds": round(time.perf_counter() - started, 2)}))


def serve_noop_kinesis() -> None:
    """A Kinesis endpoint that accepts every PutRecords entry and keeps nothing (prints its port)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            target = self.headers.get("X-Amz-Target", "")
            if target.endswith(".PutRecords"):
                n = len(json.loads(body)["Records"])
                answer = {"FailedRecordCount": 0, "Records": [
                    {"SequenceNumber": str(i), "ShardId": f"shardId-00000000000{i % 4}"} for i in range(n)]}
            else:
                answer = {}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def run_memory_child(csv_path: Path, stream: str, endpoint: str) -> dict:
    env = clean_env(AWS_ENDPOINT_URL=endpoint, AWS_DEFAULT_REGION=REGION, AWS_ACCESS_KEY_ID="testing",
                    AWS_SECRET_ACCESS_KEY="testing")
    done = subprocess.run([sys.executable, __file__, "--memory-child", str(csv_path), stream], env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(f"memory child failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_memory(ctx: dict) -> dict:
    small_rows, big_rows = (10_000, 100_000) if ctx["quick"] else (10_000, 1_000_000)
    small, big = repeated_dataset(small_rows), repeated_dataset(big_rows)
    say(f"  files: {small_rows:,} rows ({small.stat().st_size / MIB:.1f} MiB), {big_rows:,} rows "
        f"({big.stat().st_size / MIB:.0f} MiB); the producer runs in a child process; {load()}")
    noop = subprocess.Popen([sys.executable, __file__, "--noop-kinesis"], stdout=subprocess.PIPE, text=True,
                            env=clean_env())
    try:
        port = int(noop.stdout.readline())
        endpoint = f"http://127.0.0.1:{port}"
        small_noop = run_memory_child(small, "noop", endpoint)
        big_noop = run_memory_child(big, "noop", endpoint)
    finally:
        noop.terminate()
        noop.wait(timeout=10)
    stream = f"bench-memory-{ctx['tag']}"
    create_stream(ctx["kinesis"], stream)
    small_moto = run_memory_child(small, stream, ctx["endpoint"])
    runs = [(f"{small_rows:,} rows, no-op endpoint", small_noop), (f"{big_rows:,} rows, no-op endpoint", big_noop),
            (f"{small_rows:,} rows, local moto", small_moto)]
    big_moto = None
    if ctx.get("memory_on_moto"):
        big_stream = f"bench-memory-big-{ctx['tag']}"
        create_stream(ctx["kinesis"], big_stream)
        big_moto = run_memory_child(big, big_stream, ctx["endpoint"])
        big_moto["moto_rss_mb"] = rss_mb(ctx["moto_pid"])
        runs.append((f"{big_rows:,} rows, local moto", big_moto))
    for label, r in runs:
        say(f"  {label:32} peak RSS {r['peak_rss_mb']:6.1f} MB  ({r['records']:,} records in {r['seconds']:.1f} s; "
            f"{r['rss_before_producing_mb']:.0f} MB before producing)")
    ratio = big_noop["peak_rss_mb"] / small_noop["peak_rss_mb"]
    moto_rate = ctx.get("moto_records_per_second")
    held, moto_rss = ctx.get("records_in_moto", 0) + small_rows, rss_mb(ctx["moto_pid"])
    moto_note = (f"moto's RSS is {moto_rss:.0f} MB now, holding ~{held:,} records"
                 if moto_rss and held > small_rows else "moto keeps every record it is sent")
    note = (f"{big_rows:,} rows against a no-op Kinesis endpoint (answers PutRecords, stores nothing): the "
            f"producer's memory is the figure, not moto's ({moto_note}), and at moto's "
            f"{'~' + format(moto_rate, ',.0f') + ' records/s' if moto_rate else 'speed'} 1M rows would take "
            "minutes; the 10,000-row run against moto shows the endpoint makes no difference to the producer")
    say(f"  note: {note}")
    passed = big_noop["peak_rss_mb"] < 300 and ratio <= 1.5
    return {"figure": f"peak RSS of the producer process, {big_rows:,} rows (and vs {small_rows:,})",
            "measured": f"{big_noop['peak_rss_mb']:.0f} MB; {ratio:.2f}x the {small_rows:,}-row peak "
                        f"({small_noop['peak_rss_mb']:.0f} MB)",
            "target": "< 300 MB and <= 1.5x", "passed": passed,
            "figures": {"small": small_noop, "big": big_noop, "small_on_moto": small_moto, "big_on_moto": big_moto,
                        "ratio": round(ratio, 3), "note": note}}


# --- 4. the whole series -----------------------------------------------------------------------------
def run_demo_once(label: str, **env: str) -> dict:
    """`kinesis-lab demo` on the shipped sample in build/bench/demo-<label>; wall time and per notebook."""
    build = BENCH / f"demo-{label}"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    log = BENCH / f"demo-{label}.log"
    command = [sys.executable, "-m", "kinesis_lab.course.cli"]  # this Python's kinesis_lab (the `kinesis-lab` script may be another's)
    load_before = load()
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run([*command, "demo"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=1800,
                              env=clean_env(LAB_BUILD_DIR=str(build), **env))
    wall = time.perf_counter() - started
    summary_file = build / "run-summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    per_notebook = summary.get("notebook_seconds", {})
    if done.returncode:
        say(f"  the demo ({label}) exited with {done.returncode}: see {log}; last lines:")
        for line in log.read_text(errors="replace").splitlines()[-8:]:
            say(f"    | {line}")
    return {"label": label, "wall_seconds": round(wall, 1), "exit_code": done.returncode,
            "notebook_seconds": per_notebook, "total_seconds": summary.get("total_seconds"),
            "pipeline_07_seconds": next((v for k, v in per_notebook.items() if k.startswith("07_")), None),
            "load_before": load_before, "load_after": load(), "log": str(log.relative_to(REPO))}


def bench_demo(ctx: dict) -> dict:
    notebooks = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [n for n in ("07", "08", "09") if not any(nb.startswith(n + "_") for nb in notebooks)]
    say(f"  {len(notebooks)} notebooks: {', '.join(n[:2] for n in notebooks)}"
        + (f"; missing: {', '.join(missing)}" if missing else "") + "; twice, one after the other: without "
        f"notebook 00's Spark warm-up (KINESIS_LAB_WARM_UP=0), then as shipped; {load()}")
    runs = [run_demo_once("no-warm-up", KINESIS_LAB_WARM_UP="0"), run_demo_once("shipped")]
    names = list(runs[1]["notebook_seconds"] or runs[0]["notebook_seconds"])
    say(f"    {'notebook':45} {'no warm-up':>11} {'shipped':>9}")
    for name in names:
        say(f"    {name:45} " + " ".join(f"{r['notebook_seconds'].get(name, float('nan')):9.1f} s" for r in runs))
    for r in runs:
        say(f"  {r['label']:11} notebooks {r['total_seconds']} s, wall {r['wall_seconds']} s, exit {r['exit_code']}; "
            f"{r['load_before']} -> {r['load_after']}")
    shipped = runs[1]
    total, seven = shipped["total_seconds"], shipped["pipeline_07_seconds"]
    passed = shipped["exit_code"] == 0 and total is not None and total <= 75 and seven is not None and seven <= 25
    measured = (f"{total} s for the {len(shipped['notebook_seconds'])} notebooks, 07 {seven} s "
                f"(without the warm-up: {runs[0]['total_seconds']} s, 07 {runs[0]['pipeline_07_seconds']} s), "
                f"exit code {shipped['exit_code']}" + (f"; notebooks {', '.join(missing)} missing" if missing else ""))
    return {"figure": "`kinesis-lab demo` on the shipped sample: the notebooks' time", "measured": measured,
            "target": "<= 75 s, 07 <= 25 s", "passed": passed,
            "figures": {"shipped": shipped, "no_warm_up": runs[0], "missing_notebooks": missing}}


# --- 5. local Firehose latency -------------------------------------------------------------------------
def bench_firehose_latency(ctx: dict) -> dict:
    from kinesis_lab.cloud.firehose_config import build_delivery_stream_request, create_delivery_stream

    session = ctx["session"]
    kinesis, s3, iam, firehose = (session.client(n) for n in ("kinesis", "s3", "iam", "firehose"))
    tag = ctx["tag"]
    stream, bucket, prefix, interval = f"bench-fh-{tag}", f"bench-fh-{tag}", "latency/", 2
    create_stream(kinesis, stream)
    s3.create_bucket(Bucket=bucket)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "firehose.amazonaws.com"}}]}
    role_arn = iam.create_role(RoleName=f"bench-fh-{tag}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    stream_arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    request = build_delivery_stream_request(
        delivery_stream_name=f"bench-fh-{tag}", stream_arn=stream_arn, role_arn=role_arn,
        bucket_arn=f"arn:aws:s3:::{bucket}", prefix=prefix, error_output_prefix=None, buffer_size_mb=64,
        buffer_interval_seconds=interval)
    create_delivery_stream(firehose, request)
    say(f"  delivery stream with BufferingHints IntervalInSeconds={interval}, SizeInMBs=64; "
        f"S3 polled every 50 ms; {load()}")

    def keys() -> set[str]:
        return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}

    def one(n: int) -> float:
        seen = keys()
        records = [{"Data": f'{{"n":{n},"i":{i}}}\n'.encode(), "PartitionKey": f"{n}-{i}"} for i in range(100)]
        kinesis.put_records(StreamName=stream, Records=records)
        put_at = time.perf_counter()
        deadline = put_at + 30
        while time.perf_counter() < deadline:
            if keys() - seen:
                return time.perf_counter() - put_at
            time.sleep(0.05)
        raise TimeoutError("no object in S3 within 30 s: is the local Firehose service running?")

    warm_up = one(0)  # the service finds the new delivery stream first
    samples = []
    for n in range(1, 4 if ctx["quick"] else 9):
        time.sleep(random.uniform(0, 0.5))  # not always in the same phase as the service's poll loop
        samples.append(one(n))
    worst, median = max(samples), statistics.median(samples)
    say(f"  warm-up {warm_up:.2f} s; samples: {', '.join(f'{s:.2f}' for s in samples)} s; "
        f"max {worst:.2f} s, median {median:.2f} s; {load()}")
    return {"figure": "local Firehose: put -> object visible in S3 (IntervalInSeconds=2)",
            "measured": f"max {worst:.2f} s, median {median:.2f} s over {len(samples)} samples",
            "target": f"<= {interval + 1} s (interval + 1 s)", "passed": worst <= interval + 1,
            "figures": {"samples": [round(s, 3) for s in samples], "max": round(worst, 3),
                        "median": round(median, 3), "warm_up": round(warm_up, 3)}}


# --- 6. fresh setup ----------------------------------------------------------------------------------
FRESH_MARK = re.compile(r"<!-- fresh-setup: (\{.*\}) -->")


def pip_cached_pyspark() -> list[str]:
    done = subprocess.run([sys.executable, "-m", "pip", "cache", "list", "pyspark"], capture_output=True,
                          text=True, timeout=120)
    return [line.strip(" -") for line in done.stdout.splitlines() if "pyspark" in line.lower()]


def bench_fresh_setup(ctx: dict) -> dict:
    if not ctx["fresh_setup"]:
        last = None
        if RESULTS_MD.is_file():
            found = FRESH_MARK.search(RESULTS_MD.read_text())
            last = json.loads(found.group(1)) if found else None
        measured = (f"last measured {last['seconds']:.0f} s (install {last.get('install_seconds', '?')} s) on "
                    f"{last['date']} (pyspark wheel {last['pyspark_wheel']})"
                    if last else "not measured (run with --fresh-setup)")
        say(f"  {measured}")
        return {"figure": "fresh clone + new .venv + `make demo`", "measured": measured, "target": "report",
                "passed": None, "figures": {"last": last}}
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    cached_before = pip_cached_pyspark()
    tmp = Path(tempfile.mkdtemp(prefix="kinesis-lab-fresh-", dir="/tmp"))
    clone = tmp / "repo"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    notebooks = sorted(p.name[:2] for p in (clone / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    say(f"  clone of {head} in {clone}" + (f" ({len(dirty.splitlines())} uncommitted change(s) in the working tree "
                                           "are not in it)" if dirty else "")
        + f"; notebooks {', '.join(notebooks)}; pyspark wheel in pip's cache before: "
        f"{', '.join(cached_before) or 'none'}; {load()}")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env = clean_env(PATH=path)
    env.pop("VIRTUAL_ENV", None)
    log = BENCH / "fresh-setup.log"
    started = time.perf_counter()
    with log.open("w") as out:  # `make demo` = `make install` (new .venv) + the demo: timed apart
        done = subprocess.run(["make", "install"], cwd=clone, stdout=out, stderr=subprocess.STDOUT, env=env,
                              timeout=3600)
        install = time.perf_counter() - started
        if done.returncode == 0:
            done = subprocess.run(["make", "demo"], cwd=clone, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  timeout=3600)
    wall = time.perf_counter() - started
    summary_file = clone / "build" / "run-summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    cached_after = pip_cached_pyspark()
    wheel = ("taken from pip's cache" if cached_before else
             "built from the sdist (now cached)" if cached_after else "built (not cached)")
    say(f"  `make demo` in the fresh clone: {wall:.0f} s (install {install:.0f} s), exit code {done.returncode}; "
        f"pyspark wheel {wheel}; "
        f"notebooks run: {', '.join(summary.get('notebook_seconds', {})) or 'none'}; log {log}")
    shutil.rmtree(tmp, ignore_errors=True)
    last = {"seconds": round(wall, 1), "install_seconds": round(install, 1),
            "date": datetime.now(UTC).strftime("%Y-%m-%d"), "pyspark_wheel": wheel,
            "exit_code": done.returncode, "commit": head, "notebooks": list(summary.get("notebook_seconds", {}))}
    return {"figure": "fresh clone + new .venv + `make demo`",
            "measured": f"{wall:.0f} s (install {install:.0f} s), exit code {done.returncode}, pyspark wheel {wheel}",
            "target": "report",
            "passed": None if done.returncode == 0 else False, "figures": {"last": last, "uncommitted": bool(dirty)}}


# --- 7. the stack's limit: a bare put_records loop ----------------------------------------------------
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


# --- 8. the pipeline's overhead -----------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_pipeline_overhead(ctx: dict) -> dict:
    from kinesis_lab.cloud.dataset import SAMPLE_PATH
    from kinesis_lab.cloud.records import iter_records
    from kinesis_lab.local.pipeline import run_pipeline, server_pids, stop_pipeline_server
    from kinesis_lab.local.pipeline.paths import lakehouse_dir
    from kinesis_lab.local.pipeline.runner import JAVA_OPTIONS

    lines = [r.data.decode().rstrip("\n") for r in iter_records(SAMPLE_PATH)]
    first, later = lines[:-40], lines[-40:]
    pipeline_dir = REPO / "databricks" / "pipeline"

    def defaults(build: Path) -> dict:
        """What the lab sets on top of Spark's defaults, put back (C1-only JIT kept: it is issue 7's)."""
        lakehouse = lakehouse_dir(build).resolve()
        return {"spark.sql.codegen.wholeStage": "true", "spark.sql.codegen.factoryMode": "FALLBACK",
                "spark.sql.adaptive.enabled": "true",
                "spark.driver.extraJavaOptions": f"-Dderby.system.home={lakehouse} -XX:TieredStopAtLevel=1"}

    def one(label: str, n: int) -> dict:
        build = BENCH / f"pipeline-{label}-{n}"
        shutil.rmtree(build, ignore_errors=True)
        source = build / "source"
        day = source / "ingestion_date=2026" / "11" / "29"
        day.mkdir(parents=True)
        (day / "bench-1").write_text("\n".join(first) + "\n")
        extra = defaults(build) if label == "defaults" else None
        out = {}
        try:
            for run in ("first", "second"):
                if run == "second":
                    (day / "bench-2").write_text("\n".join(later) + "\n")
                before = sum(cpu_seconds(pid) for pid in server_pids(build))
                result = run_pipeline(pipeline_dir, source_path=source, build_dir=build, extra_conf=extra, echo=None)
                cpu = sum(cpu_seconds(pid) for pid in server_pids(build)) - before
                assert set(result.flows.values()) == {"COMPLETED"}, result.flows
                out[run] = {"wall": round(result.duration_s, 1), "cpu": round(cpu, 1)}
        finally:
            stop_pipeline_server(build)
        say(f"    {label:9} round {n + 1}: first run {out['first']['wall']:5.1f} s wall, {out['first']['cpu']:5.1f} s "
            f"CPU (server start included); second run {out['second']['wall']:5.1f} s wall, "
            f"{out['second']['cpu']:5.1f} s CPU  ({load()})")
        return out

    rounds = 1 if ctx["quick"] else 2
    say(f"  the shipped sample ({len(lines)} records: {len(first)} in a first run, {len(later)} more in a second), "
        f"each variant in its own build folder and Spark server; the lab's settings: 2 shuffle partitions, "
        f"interpreted expressions, no AQE, JVM {JAVA_OPTIONS}; 'defaults' puts codegen, AQE and the default "
        f"collector back; {rounds} alternating round(s); {load()}")
    runs: dict[str, list[dict]] = {"lab": [], "defaults": []}
    for n in range(rounds):
        for label in ("defaults", "lab"):
            runs[label].append(one(label, n))

    def median(label: str, run: str, what: str) -> float:
        return round(statistics.median(r[run][what] for r in runs[label]), 1)

    figures = {label: {run: {what: median(label, run, what) for what in ("wall", "cpu")} for run in ("first", "second")}
               for label in runs}
    saved = {run: 1 - figures["lab"][run]["cpu"] / figures["defaults"][run]["cpu"] for run in ("first", "second")}
    measured = (f"first run {figures['lab']['first']['wall']} s ({figures['defaults']['first']['wall']} s with the "
                f"defaults), second {figures['lab']['second']['wall']} s ({figures['defaults']['second']['wall']} s); "
                f"Spark's CPU {saved['first']:.0%} / {saved['second']:.0%} less")
    say(f"  {measured}")
    return {"figure": "pipeline runs with the lab's Spark settings vs Spark's defaults", "measured": measured,
            "target": "report", "passed": None, "correct": True,
            "figures": {"medians": figures, "cpu_saved": {k: round(v, 3) for k, v in saved.items()}, "runs": runs}}


# --- main ----------------------------------------------------------------------------------------------
BENCHMARKS = {
    1: ("Producer vs the original course's producer", bench_producer_vs_original, True),
    2: ("At the limit, without loss", bench_at_the_limit, True),
    3: ("Memory", bench_memory, True),
    4: ("The whole series (kinesis-lab demo)", bench_demo, False),
    5: ("Local Firehose latency", bench_firehose_latency, True),
    6: ("Fresh setup", bench_fresh_setup, False),
    7: ("The stack's limit: a bare put_records loop", bench_put_records_limit, True),
    8: ("The pipeline's overhead", bench_pipeline_overhead, False),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test (skips 4 unless --only 4)")
    parser.add_argument("--only", type=int, nargs="+", choices=sorted(BENCHMARKS), metavar="N",
                        help="run only these benchmarks")
    parser.add_argument("--fresh-setup", action="store_true", help="measure 6: make demo in a fresh clone")
    parser.add_argument("--memory-on-moto", action="store_true",
                        help="3 also sends the big file to the local moto (about 3 min and 1 GB of moto memory for 1M)")
    parser.add_argument("--memory-child", nargs=2, metavar=("CSV", "STREAM"), help=argparse.SUPPRESS)
    parser.add_argument("--noop-kinesis", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(*args.memory_child)
        return 0
    if args.noop_kinesis:
        serve_noop_kinesis()
        return 0

    import boto3

    from kinesis_lab.local import stack

    chosen = args.only or [n for n in BENCHMARKS if not (args.quick and n == 4)]
    BENCH.mkdir(parents=True, exist_ok=True)
    info = machine()
    started_at = datetime.now(UTC)
    say(f"kinesis-lab benchmarks, {started_at:%Y-%m-%d %H:%M} UTC{' (--quick)' if args.quick else ''}")
    say(f"machine: {info['cores']} cores ({info['cpu']}), {info['ram_gb']} GB RAM, Python {info['python']}, "
        f"{info['java']}, moto {info['moto']}; {load()}")
    ctx = {"quick": args.quick, "fresh_setup": args.fresh_setup, "memory_on_moto": args.memory_on_moto,
           "tag": uuid.uuid4().hex[:6]}
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
                           measured_at=datetime.now(UTC).isoformat(timespec="seconds"), quick=args.quick,
                           loadavg_before=[round(x, 2) for x in load_before],
                           loadavg_after=[round(x, 2) for x in os.getloadavg()])
            results.append(outcome)
            say(f"  => {outcome['measured']}  [target {outcome['target']}]  {verdict(outcome['passed'])}")
    finally:
        if needs_stack:
            stack.down(state_dir)

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
    if args.quick:  # small sizes: the figures are indicative, only correctness decides the exit status
        say("--quick: sizes too small for the targets to be meaningful; exit status = correctness only "
            "(identical records, nothing lost, no error)")
        return 1 if any(r.get("correct", True) is False for r in results) else 0
    return 1 if any(r["passed"] is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
