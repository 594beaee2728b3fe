"""3. Memory: the peak RSS of a producer process for 1,000,000 rows vs 10,000 rows (a child process,
against a no-op Kinesis endpoint; run.py's --memory-child and --noop-kinesis start them)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from common import MIB, REGION, RUN, clean_env, create_stream, load, repeated_dataset, rss_mb, say


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
    done = subprocess.run([sys.executable, str(RUN), "--memory-child", str(csv_path), stream], env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(f"memory child failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_memory(ctx: dict) -> dict:
    small_rows, big_rows = (10_000, 100_000) if ctx["quick"] else (10_000, 1_000_000)
    small, big = repeated_dataset(small_rows), repeated_dataset(big_rows)
    say(f"  files: {small_rows:,} rows ({small.stat().st_size / MIB:.1f} MiB), {big_rows:,} rows "
        f"({big.stat().st_size / MIB:.0f} MiB); the producer runs in a child process; {load()}")
    noop = subprocess.Popen([sys.executable, str(RUN), "--noop-kinesis"], stdout=subprocess.PIPE, text=True,
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
