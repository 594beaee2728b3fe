"""What the benchmarks share: paths, the machine's description and load, a clean environment for a
subprocess, a fresh ON_DEMAND stream and its read-back, the synthetic CSV files (made once per size), and a
first and a second pipeline run with their Spark server's CPU."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = Path(__file__).resolve().parent / "run.py"  # the command line (and the memory child)
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def two_pipeline_runs(build: Path, first: bytes, later: bytes, extra_conf: dict | None = None) -> dict:
    """A fresh build folder's first pipeline run on ``first`` (its server's start included), then a second one
    after ``later`` landed too: {"first"|"second": {"wall": s, "cpu": the server's CPU s}}; the server stopped."""
    from kinesis_lab.local.pipeline import run_pipeline, server_pids, stop_pipeline_server

    day = build / "source" / "ingestion_date=2026" / "11" / "29"
    day.mkdir(parents=True)
    (day / "bench-1").write_bytes(first)
    out = {}
    try:
        for run in ("first", "second"):
            if run == "second":
                (day / "bench-2").write_bytes(later)
            before = sum(cpu_seconds(pid) for pid in server_pids(build))
            result = run_pipeline(REPO / "databricks" / "pipeline", source_path=build / "source", build_dir=build,
                                  extra_conf=extra_conf, echo=None)
            cpu = sum(cpu_seconds(pid) for pid in server_pids(build)) - before
            assert set(result.flows.values()) == {"COMPLETED"}, result.flows
            out[run] = {"wall": round(result.duration_s, 1), "cpu": round(cpu, 1)}
    finally:
        stop_pipeline_server(build)
    return out
