"""Running the Databricks medallion pipeline on this machine (notebooks 07-09 and the tests).

Local Spark has no S3 filesystem, so ``mirror_s3_prefix`` copies what Firehose wrote into a local
folder (our "external location"); ``run_pipeline`` runs the same pipeline files that Databricks runs
(``databricks/pipeline/``) with the open-source ``spark-pipelines`` CLI: parquet tables in a Hive
metastore kept under the build folder; ``read_table``/``pipeline_summary`` read the results with
pyarrow, so a notebook needs no second JVM (which would also fight over the Derby metastore lock).

Layout under ``build_dir``: ``external_location/`` (the mirror), ``lakehouse/`` (rendered spec,
warehouse, metastore, checkpoints, run logs). Deleting ``lakehouse/`` starts the pipeline afresh.

Running this file (see run_pipeline) is the ``spark-pipelines`` CLI with two additions: its Spark
Connect server gets a free port (not the fixed 15002, so parallel runs do not collide) and the
spec's database is created first (the stock CLI expects it to exist).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

DATABASE = "kinesis_lab"
SPEC_NAME = "spark-pipeline.yml"
BRONZE_TABLE = "bronze_events"
SILVER_TABLE = "silver_events"
QUARANTINE_TABLE = "silver_quarantine"
GOLD_PREFIX = "gold_"
DEFAULT_TIMEOUT = 900  # seconds; a run takes 1-2 minutes on 2 cores

# pipeline log lines worth showing while it runs: flow state changes and the end of the run
PROGRESS_LINE = re.compile(r"Flow \S+ (is STARTING|has COMPLETED|has FAILED|is FAILED)|Run is \w+")
FLOW_STATE = re.compile(r"(?:(\d\d:\d\d:\d\d): )?Flow '?(?:\S+\.)?(\w+)'? (?:is|has) ([A-Z]+)")
RUN_STATE = re.compile(r"Run is ([A-Z]+)")


class PipelineError(RuntimeError):
    """The local pipeline run failed; the message carries the end of its log."""


# --- the "external location": a local mirror of the Firehose prefix ---------------------------------
@dataclass(frozen=True)
class MirrorResult:
    new_objects: int  # copied by this call
    total_objects: int  # under the prefix in the bucket
    new_bytes: int
    total_bytes: int
    local_dir: Path  # the mirror root: object ``k`` is at ``local_dir / k``
    source_dir: Path  # ``local_dir / <static prefix>``: what the pipeline reads
    new_keys: tuple[str, ...] = ()


def static_prefix(prefix: str) -> str:
    """The part of a Firehose prefix before its first expression:
    ``bronze/ingestion_date=!{timestamp:yyyy/MM/dd}/`` -> ``bronze/``."""
    head = prefix.split("!{", 1)[0]
    return head if head.endswith("/") or not head else head[: head.rfind("/") + 1]


def mirror_s3_prefix(s3_client, bucket: str, prefix: str, local_dir: str | Path) -> MirrorResult:
    """Copy the objects under ``prefix`` (a Firehose expression prefix is cut at its first ``!{``)
    to ``local_dir``, keeping the key layout. Incremental: an object is downloaded only if it was
    not copied before with the same ETag and size (recorded in ``local_dir/.mirror-manifest.json``)
    or its local copy is gone. Files appear atomically (written under a hidden name, then renamed),
    so a pipeline reading the folder never sees half a file."""
    local_dir = Path(local_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = local_dir / ".mirror-manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    list_prefix = static_prefix(prefix)
    new_keys: list[str] = []
    total_objects = total_bytes = new_bytes = 0
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=list_prefix):
        for obj in page.get("Contents", []):
            key, size, etag = obj["Key"], obj["Size"], obj.get("ETag", "").strip('"')
            if key.endswith("/"):  # a "folder" placeholder object
                continue
            total_objects += 1
            total_bytes += size
            target = local_dir / key
            if manifest.get(key) == {"etag": etag, "size": size} and target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.part")
            s3_client.download_file(bucket, key, str(partial))
            os.replace(partial, target)
            manifest[key] = {"etag": etag, "size": size}
            new_keys.append(key)
            new_bytes += size
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return MirrorResult(
        new_objects=len(new_keys),
        total_objects=total_objects,
        new_bytes=new_bytes,
        total_bytes=total_bytes,
        local_dir=local_dir,
        source_dir=local_dir / list_prefix,
        new_keys=tuple(new_keys),
    )


def repo_pipeline_dir(home: str | Path) -> Path:
    """The pipeline root in the repository (the folder Databricks deploys): ``databricks/pipeline``."""
    return Path(home) / "databricks" / "pipeline"


def external_location_dir(build_dir: str | Path) -> Path:
    """Where the notebooks mirror the bucket (the local stand-in for the UC external location)."""
    return Path(build_dir) / "external_location"


# --- running the pipeline ------------------------------------------------------------------------
def lakehouse_dir(build_dir: str | Path) -> Path:
    return Path(build_dir) / "lakehouse"


def warehouse_dir(build_dir: str | Path) -> Path:
    return lakehouse_dir(build_dir) / "warehouse"


@dataclass(frozen=True)
class PipelineRun:
    duration_s: float
    log_path: Path
    spec_path: Path
    full_refresh: bool
    flows: dict[str, str] = field(default_factory=dict)  # flow (table) -> its last state, e.g. COMPLETED
    # (time "HH:MM:SS", flow, state) in log order: STARTING / RUNNING / COMPLETED / FAILED ...
    timeline: list[tuple[str, str, str]] = field(default_factory=list)


# Static settings are fixed when Spark starts; the spec's configuration is applied to every flow
# (and fails for these), so the runner hands them to the server start instead (STATIC_CONF_ENV).
STATIC_CONF_ENV = "KINESIS_LAB_SPARK_STATIC_CONF"
STATIC_SQL_CONFS = (
    "spark.sql.catalogImplementation",
    "spark.sql.warehouse.dir",
    "spark.sql.extensions",
    "spark.sql.hive.",
    "spark.sql.catalog.spark_catalog.defaultDatabase",
    "spark.sql.streaming.ui.",
    "spark.sql.ui.",
)


def is_pipeline_conf(key: str) -> bool:
    """True for settings a flow can set (``lab.*``, runtime ``spark.sql.*``): they go in the spec."""
    return key.startswith("lab.") or (key.startswith("spark.sql.") and not key.startswith(STATIC_SQL_CONFS))


def spark_settings(
    *, source_path: str | Path, build_dir: str | Path, extra_conf: Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """(pipeline configuration, static Spark settings) for a local run."""
    lakehouse = lakehouse_dir(build_dir).resolve()
    settings = {
        "lab.source_mode": "files",
        "lab.source_path": str(Path(source_path).resolve()),
        "spark.sql.shuffle.partitions": "2",  # 200 by default: minutes of empty tasks on 2 cores
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",  # plain timestamps for pyarrow
        "spark.sql.catalogImplementation": "hive",  # else a second run fails with LOCATION_ALREADY_EXISTS
        "spark.sql.warehouse.dir": str(lakehouse / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={lakehouse / 'metastore_db'};create=true"
        ),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={lakehouse}",  # derby.log
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.default.parallelism": "2",
        **{key: str(value) for key, value in (extra_conf or {}).items()},
    }
    pipeline = {k: v for k, v in settings.items() if is_pipeline_conf(k)}
    static = {k: v for k, v in settings.items() if not is_pipeline_conf(k)}
    return pipeline, static


def render_spec(pipeline_dir: str | Path, *, build_dir: str | Path, configuration: Mapping[str, str]) -> Path:
    """Write ``lakehouse/spark-pipeline.yml`` from the committed spec, with absolute paths (storage,
    libraries) and ``configuration`` merged over the committed one."""
    import yaml

    pipeline_dir = Path(pipeline_dir).resolve()
    lakehouse = lakehouse_dir(build_dir).resolve()
    lakehouse.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((pipeline_dir / SPEC_NAME).read_text())
    # the CLI resolves globs relative to the spec's folder, and only accepts relative ones
    relative_root = os.path.relpath(pipeline_dir, lakehouse)
    spec["libraries"] = [
        {"glob": {"include": f"{relative_root}/{entry['glob']['include']}"}} for entry in spec["libraries"]
    ]
    spec["storage"] = (lakehouse / "storage").as_uri()
    spec.setdefault("database", DATABASE)
    spec["configuration"] = {**spec.get("configuration", {}), **configuration}
    spec_path = lakehouse / SPEC_NAME
    header = "# Rendered by kinesis_lab.local_pipeline.render_spec from the committed spec: do not edit.\n"
    spec_path.write_text(header + yaml.safe_dump(spec, sort_keys=False))
    return spec_path


def _pipelines_command(spec_path: Path, full_refresh: bool, dry_run: bool = False) -> list[str]:
    """``spark-pipelines run --spec ...``: the same CLI (pyspark.pipelines.cli), started from this
    file (see _pipelines_cli) with plain Python, which starts one Spark Connect JVM; the
    ``spark-pipelines`` script goes through spark-submit, which starts a second JVM only to
    launch Python (about 10 s more per run)."""
    action = "dry-run" if dry_run else "run"
    command = [sys.executable, str(Path(__file__).resolve()), action, "--spec", str(spec_path)]
    return [*command, "--full-refresh-all"] if full_refresh and not dry_run else command


def run_pipeline(
    pipeline_dir: str | Path,
    *,
    source_path: str | Path,
    build_dir: str | Path,
    full_refresh: bool = False,
    extra_conf: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    echo: Callable[[str], None] | None = print,
    dry_run: bool = False,
) -> PipelineRun:
    """Run the pipeline once (an incremental update, or ``full_refresh``: reset every table;
    ``dry_run``: only check that the graph resolves, as ``spark-pipelines dry-run``).

    The full log goes to ``lakehouse/logs/run-<time>.log``; flow starts/completions go to ``echo``
    (None: silent). Raises PipelineError with the end of the log if the run fails or times out."""
    pipeline_dir = Path(pipeline_dir).resolve()
    lakehouse = lakehouse_dir(build_dir).resolve()
    lakehouse.mkdir(parents=True, exist_ok=True)
    with build_lock(build_dir):
        return _run_locked(
            pipeline_dir, lakehouse, source_path, build_dir, full_refresh, extra_conf, timeout, echo, dry_run
        )


@contextlib.contextmanager
def build_lock(build_dir: str | Path):
    """One pipeline run at a time per build folder (two would fight over the Derby metastore)."""
    lock_path = lakehouse_dir(build_dir) / ".run.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(
                f"another pipeline run is using {Path(build_dir).resolve()}: wait until it finishes"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_locked(
    pipeline_dir, lakehouse, source_path, build_dir, full_refresh, extra_conf, timeout, echo, dry_run
):
    configuration, static_conf = spark_settings(
        source_path=source_path, build_dir=build_dir, extra_conf=extra_conf
    )
    spec_path = render_spec(pipeline_dir, build_dir=build_dir, configuration=configuration)
    logs = lakehouse / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYTHONUNBUFFERED": "1",  # progress lines as they happen
        "PYTHONPATH": os.pathsep.join(filter(None, [str(pipeline_dir), os.environ.get("PYTHONPATH")])),
        STATIC_CONF_ENV: json.dumps(static_conf),
    }
    command = _pipelines_command(spec_path, full_refresh, dry_run)
    flows: dict[str, str] = {}
    timeline: list[tuple[str, str, str]] = []
    run_states: list[str] = []
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        process = subprocess.Popen(
            command,
            cwd=lakehouse,  # anything Spark drops in the working folder stays in the build folder
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )

        def pump() -> None:
            for line in process.stdout:
                log.write(line)
                log.flush()  # so the log can be followed while the run goes on
                if match := FLOW_STATE.search(line):
                    clock, flow, state = match.groups()
                    flows[flow] = state
                    timeline.append((clock or "", flow, state))
                if match := RUN_STATE.search(line):
                    run_states.append(match.group(1))
                if echo is not None and PROGRESS_LINE.search(line):
                    echo(_short_progress(line))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            reader.join(timeout=10)
            raise PipelineError(
                f"pipeline run timed out after {timeout:.0f} s; log: {log_path}\n{_log_tail(log_path)}"
            ) from None
        reader.join(timeout=30)
    duration = time.monotonic() - started
    if returncode != 0 or (run_states and run_states[-1] != "COMPLETED"):
        failed = sorted(name for name, state in flows.items() if state == "FAILED")
        raise PipelineError(
            f"pipeline run failed (exit code {returncode}"
            + (f", failed flows: {', '.join(failed)}" if failed else "")
            + f") after {duration:.0f} s; full log: {log_path}\n{_log_tail(log_path)}"
        )
    if echo is not None:
        echo(f"pipeline run finished in {duration:.1f} s (log: {log_path})")
    return PipelineRun(duration, log_path, spec_path, full_refresh, dict(flows), list(timeline))


def _short_progress(line: str) -> str:
    """``2026-11-26 01:13:15: Flow spark_catalog.kinesis_lab.bronze_events has COMPLETED.``
    -> ``01:13:15 bronze_events has COMPLETED``."""
    text = line.strip().rstrip(".")
    text = re.sub(r"^\d{4}-\d\d-\d\d (\d\d:\d\d:\d\d): ", r"\1 ", text)
    return re.sub(r"Flow (?:\S+\.)?(\w+) ", r"\1 ", text)


def _log_tail(log_path: Path, lines: int = 40) -> str:
    """The last lines of a log, without Java/Python stack frames (the messages are what help)."""
    kept = [
        line.rstrip()
        for line in log_path.read_text(errors="replace").splitlines()
        if line.strip() and not re.match(r"\s+(at |\.\.\. \d+ more|File \")", line)
    ]
    return "\n".join(kept[-lines:])


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, 15)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, 9)
        except ProcessLookupError:
            pass


def reset_pipeline(build_dir: str | Path) -> None:
    """Forget every table, checkpoint and the metastore: the next run starts from nothing."""
    shutil.rmtree(lakehouse_dir(build_dir), ignore_errors=True)


# --- reading the results without Spark -------------------------------------------------------------
def table_paths(build_dir: str | Path, database: str = DATABASE) -> dict[str, Path]:
    """Table name -> its parquet folder in the local warehouse (tables that exist so far)."""
    database_dir = warehouse_dir(build_dir) / f"{database}.db"
    if not database_dir.is_dir():
        return {}
    return {
        p.name: p for p in sorted(database_dir.iterdir()) if p.is_dir() and not p.name.startswith((".", "_"))
    }


def _data_files(table_dir: Path) -> list[Path]:
    """The table's parquet files. A streaming table lists its committed files in ``_spark_metadata``
    (a failed micro-batch can leave uncommitted files behind); other tables: every visible file."""
    log_dir = table_dir / "_spark_metadata"
    if log_dir.is_dir():
        added: set[str] = set()
        removed: set[str] = set()
        for entry in log_dir.iterdir():
            if entry.name.startswith(".") or not re.fullmatch(r"\d+(\.compact)?", entry.name):
                continue
            for line in entry.read_text().splitlines()[1:]:  # first line: format version
                if line.strip():
                    record = json.loads(line)
                    (removed if record.get("action") == "delete" else added).add(record["path"])
        paths = [Path(unquote(urlparse(uri).path)) for uri in sorted(added - removed)]
        return [p for p in paths if p.exists()]
    return sorted(p for p in table_dir.rglob("*.parquet") if not p.name.startswith((".", "_")))


def read_table(build_dir: str | Path, name: str, columns: list[str] | None = None, database: str = DATABASE):
    """A pipeline table as a pandas DataFrame (read with pyarrow; Spark is not needed)."""
    import pandas as pd
    import pyarrow.parquet as pq

    paths = table_paths(build_dir, database)
    if name not in paths:
        raise KeyError(f"no table {name!r} in {warehouse_dir(build_dir)} (has: {', '.join(paths) or 'none'})")
    files = _data_files(paths[name])
    if not files:
        return pd.DataFrame(columns=columns or [])
    tables = [pq.read_table(f, columns=columns) for f in files]
    import pyarrow as pa

    return pa.concat_tables(tables, promote_options="default").to_pandas()


def table_rows(build_dir: str | Path, name: str, database: str = DATABASE) -> int:
    """Row count from the parquet footers (no data read)."""
    import pyarrow.parquet as pq

    paths = table_paths(build_dir, database)
    if name not in paths:
        return 0
    return sum(pq.ParquetFile(f).metadata.num_rows for f in _data_files(paths[name]))


def pipeline_summary(build_dir: str | Path, database: str = DATABASE) -> dict:
    """Rows per layer, quarantined rows per broken rule, rows per gold table, and the table folders."""
    paths = table_paths(build_dir, database)
    by_rule: dict[str, int] = {}
    if QUARANTINE_TABLE in paths:
        for rules in read_table(build_dir, QUARANTINE_TABLE, ["broken_rules"], database)["broken_rules"]:
            for rule in rules if rules is not None else []:
                by_rule[rule] = by_rule.get(rule, 0) + 1
    return {
        "bronze_rows": table_rows(build_dir, BRONZE_TABLE, database),
        "silver_rows": table_rows(build_dir, SILVER_TABLE, database),
        "quarantine_rows": table_rows(build_dir, QUARANTINE_TABLE, database),
        "quarantine_by_rule": dict(sorted(by_rule.items(), key=lambda item: (-item[1], item[0]))),
        "gold_tables": {
            name: table_rows(build_dir, name, database) for name in paths if name.startswith(GOLD_PREFIX)
        },
        "table_paths": {name: str(path) for name, path in paths.items()},
    }


# --- entry point of the pipeline subprocess (see _pipelines_command) ----------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pipelines_cli() -> None:
    """The stock ``spark-pipelines`` CLI (pyspark.pipelines.cli.main) with two changes made before it
    runs: its Spark Connect server listens on a free local port, not the fixed 15002 (so runs from
    several notebooks or tests do not collide), and the spec's database exists (the CLI fails with
    SCHEMA_NOT_FOUND otherwise, and pipeline files may not run DDL)."""
    from pyspark.pipelines import cli
    from pyspark.sql.connect.session import SparkSession as RemoteSparkSession

    args = sys.argv[1:]
    spec = cli.load_pipeline_spec(Path(args[args.index("--spec") + 1])) if "--spec" in args else None
    if spec is not None:
        port = _free_port()
        settings = {
            **json.loads(os.environ.get(STATIC_CONF_ENV) or "{}"),
            **spec.configuration,
            "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(port),
        }
        os.environ.pop("SPARK_REMOTE", None)
        # what `--remote local` does (start the JVM with the Connect plugin and a random auth token,
        # static settings apply here and only here), but on our port; pyspark 4.3 API
        RemoteSparkSession._start_connect_server("local[*]", settings)
        os.environ["SPARK_LOCAL_REMOTE"] = "1"  # stopping the session stops this server
        os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
        # "localhost": the client then talks plain text (with the token), as for `--remote local`
        spark = RemoteSparkSession.builder.remote(f"sc://localhost:{port}").getOrCreate()
        if spec.database:
            spark.sql(f"CREATE DATABASE IF NOT EXISTS `{spec.database}`")
        # cli.run's SparkSession.builder.getOrCreate() now returns this session
    cli.main()


if __name__ == "__main__":
    _pipelines_cli()
