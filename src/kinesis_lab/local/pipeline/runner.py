"""Running the Databricks medallion pipeline on this machine (notebooks 07-09 and the tests).

Local Spark has no S3 filesystem, so ``mirror_s3_prefix`` copies what Firehose wrote into a local
folder (our "external location"); ``run_pipeline`` runs the same pipeline files that Databricks runs
(``databricks/pipeline/``) with the open-source ``spark-pipelines`` CLI: parquet tables in a Hive
metastore kept under the build folder; ``read_table``/``pipeline_summary`` read the results with
pyarrow, so a notebook needs no second JVM (which would also fight over the Derby metastore lock).

Layout under ``build_dir``: ``external_location/`` (the mirror), ``lakehouse/`` (rendered spec,
warehouse, metastore, checkpoints, run logs, ``connect-server/``). The tables are in Spark's session
catalog, one schema per layer as on Databricks (``bronze.bronze_events`` in ``warehouse/bronze.db/``).
Deleting ``lakehouse/`` (after ``stop_pipeline_server``; ``reset_pipeline`` does both) starts the
pipeline afresh.

Spark itself runs in a long-lived Spark Connect server, one per build folder (``reuse_server=True``,
the default): the first run starts it (pyspark's ``spark.local.connect.reuse`` opt-in, with its
discovery file in ``lakehouse/connect-server/``), later runs connect to it, each in a session of its
own, and skip the ~25 s of JVM and Hive metastore start. ``stop_pipeline_server`` stops it.

Running this file (see run_pipeline) is the ``spark-pipelines`` CLI with two additions: it connects
to the build folder's server (or, with ``reuse_server=False``, starts an in-process one on a free
port, not the fixed 15002, so parallel runs do not collide) and the spec's database and the layer
schemas are created first (the stock CLI expects them to exist; Databricks creates them itself).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
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

from kinesis_lab.cloud.config import LAYER_SCHEMAS, BuildFolderError, schema_of, unwritable, writable_folder  # noqa: F401
from kinesis_lab.cloud.prefixes import static_folder
from kinesis_lab.local import procs

SPEC_NAME = "spark-pipeline.yml"
BRONZE_TABLE = "bronze_events"
SILVER_TABLE = "silver_events"
QUARANTINE_TABLE = "silver_quarantine"
GOLD_PREFIX = "gold_"
DEFAULT_TIMEOUT = 900  # seconds; a run takes 1-2 minutes on 2 cores
JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"  # the Spark JVM's, see spark_settings

# pipeline log lines worth showing while it runs: flow state changes, the end of the run, the server used
PROGRESS_LINE = re.compile(
    r"Flow \S+ (is STARTING|has COMPLETED|has FAILED|is FAILED)|Run is \w+|^Spark Connect server\b"
)
SERVER_LINE = re.compile(r"^Spark Connect server (started|reused): pid (\d+)")
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
    emptied: int = 0  # files of an earlier bucket (or local stack) removed first


MANIFEST = ".mirror-manifest.json"
BUILT_FROM = "built-from.json"  # in lakehouse/: the bucket (bucket_source) of the last successful run


def bucket_source(s3_client, bucket: str) -> dict:
    """Who the bucket is: its name, creation date (a bucket created again has a new one) and, on the
    local stack, the id of the moto server holding it (new with every local stack)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from kinesis_lab.local import stack

    source: dict = {"bucket": bucket, "created": None, "stack_id": None}
    with contextlib.suppress(ClientError, BotoCoreError):  # e.g. no s3:ListAllMyBuckets on AWS
        for entry in s3_client.list_buckets().get("Buckets", []):
            if entry["Name"] == bucket:
                source["created"] = entry["CreationDate"].isoformat()
    endpoint = s3_client.meta.endpoint_url or ""
    if urlparse(endpoint).hostname in (stack.HOST, "localhost"):
        source["stack_id"] = (stack.moto_identity(endpoint) or {}).get("stack_id")
    return source


def _same_source(a: dict | None, b: dict | None) -> bool:
    """Same bucket name and creation date, and same local stack where both are known (a busy moto
    that did not say who it is does not empty the mirror)."""
    if not a or not b:
        return False
    same_stack = a.get("stack_id") == b.get("stack_id") or None in (a.get("stack_id"), b.get("stack_id"))
    return (a["bucket"], a.get("created")) == (b["bucket"], b.get("created")) and same_stack


def _read_manifest(local_dir: Path) -> dict:
    """``{"source": bucket_source(...), "objects": {key: {"etag", "size"}}}``; an older manifest (only
    the objects) has no source."""
    data = _read_json(local_dir / MANIFEST)
    return data if "objects" in data else {"source": None, "objects": data}


def _empty_mirror(local_dir: Path, objects: dict) -> int:
    """Delete the files the manifest lists (and the folders left empty); returns how many."""
    removed = 0
    for key in objects:
        with contextlib.suppress(FileNotFoundError):
            (local_dir / key).unlink()
            removed += 1
    for folder in sorted((p for p in local_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty
    return removed


def mirror_s3_prefix(
    s3_client, bucket: str, prefix: str, local_dir: str | Path, echo: Callable[[str], None] | None = print
) -> MirrorResult:
    """Copy the objects under ``prefix`` (a Firehose expression prefix is cut at its first ``!{``)
    to ``local_dir``, keeping the key layout. Incremental: an object is downloaded only if it was
    not copied before with the same ETag and size (recorded in ``local_dir/.mirror-manifest.json``)
    or its local copy is gone. Files appear atomically (written under a hidden name, then renamed),
    so a pipeline reading the folder never sees half a file.

    The mirror follows the bucket: the manifest records who the bucket is (``bucket_source``); when
    that changes (a new local stack, the bucket deleted and created again) the files copied before
    are deleted first (``echo`` says so) and the pipeline's next run rebuilds its tables."""
    local_dir = writable_folder(local_dir)
    manifest_path = local_dir / MANIFEST
    source = bucket_source(s3_client, bucket)
    previous = _read_manifest(local_dir)
    emptied = 0
    if not _same_source(previous["source"], source):
        emptied = _empty_mirror(local_dir, previous["objects"])
        if emptied and echo is not None:
            echo(f"the mirror held {emptied} objects of an earlier bucket or local stack: deleted them first")
        previous = {"source": source, "objects": {}}
    manifest = previous["objects"]
    list_prefix = static_folder(prefix)
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
    tmp = manifest_path.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"source": source, "objects": manifest}, indent=1, sort_keys=True))
    os.replace(tmp, manifest_path)
    return MirrorResult(
        new_objects=len(new_keys),
        total_objects=total_objects,
        new_bytes=new_bytes,
        total_bytes=total_bytes,
        local_dir=local_dir,
        source_dir=local_dir / list_prefix,
        new_keys=tuple(new_keys),
        emptied=emptied,
    )


def mirror_source(source_path: str | Path) -> dict | None:
    """The bucket a mirrored folder comes from (``bucket_source``), from the manifest of the mirror it
    is in; None if it is not in a mirror (or an older one)."""
    for folder in (Path(source_path).resolve(), *Path(source_path).resolve().parents):
        if (folder / MANIFEST).is_file():
            return _read_manifest(folder)["source"]
    return None


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
    # the build folder's Spark Connect server: "started" by this run or "reused"; "in-process" if
    # run with reuse_server=False (server_pid is then None)
    server: str = "in-process"
    server_pid: int | None = None


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
        # derby.log in the lakehouse; C1 only (no C2 JIT): Spark starts ~10 s faster on 2 cores and
        # the runs (small data) are no slower
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={lakehouse} {JAVA_OPTIONS}",
        "spark.ui.enabled": "false",
        # the driver's RPC and block manager ports: loopback only (else Spark binds the host's network
        # address, reachable from the network, without authentication)
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
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
    spec.setdefault("database", LAYER_SCHEMAS[0])
    spec["configuration"] = {**spec.get("configuration", {}), **configuration}
    spec_path = lakehouse / SPEC_NAME
    header = "# Rendered by kinesis_lab.local.pipeline.render_spec from the committed spec: do not edit.\n"
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
    reuse_server: bool = True,
) -> PipelineRun:
    """Run the pipeline once (an incremental update, or ``full_refresh``: reset every table;
    ``dry_run``: only check that the graph resolves, as ``spark-pipelines dry-run``).

    ``reuse_server``: run in the build folder's long-lived Spark Connect server, starting it if
    there is none (or it is dead, does not answer, or was started with other settings); it keeps
    running after the run: ``stop_pipeline_server`` (or ``reset_pipeline``) stops it. False: start
    Spark for this run only, in the run's own process.

    The full log goes to ``lakehouse/logs/run-<time>.log``; flow starts/completions go to ``echo``
    (None: silent). Raises PipelineError with the end of the log if the run fails or times out
    (a timed-out run also stops the build folder's server), or within seconds if that server dies.

    The tables follow the mirror: when ``source_path`` is in a mirror of another bucket (or local
    stack) than the last successful run's, the run is a full refresh (echo says so)."""
    pipeline_dir = Path(pipeline_dir).resolve()
    lakehouse = writable_folder(lakehouse_dir(build_dir).resolve(), build_dir)
    with build_lock(build_dir):
        return _run_locked(
            pipeline_dir,
            lakehouse,
            source_path,
            build_dir,
            full_refresh,
            extra_conf,
            timeout,
            echo,
            dry_run,
            reuse_server,
        )


@contextlib.contextmanager
def build_lock(build_dir: str | Path):
    """One pipeline run at a time per build folder (two would fight over the Derby metastore)."""
    lock_path = writable_folder(lakehouse_dir(build_dir), build_dir) / ".run.lock"
    try:
        handle = open(lock_path, "w")
    except OSError as exc:
        raise unwritable(build_dir, exc) from None
    with handle:
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
    pipeline_dir, lakehouse, source_path, build_dir, full_refresh, extra_conf, timeout, echo, dry_run, reuse
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
    env.pop(SERVER_ENV, None)
    if reuse:
        env[SERVER_ENV] = str(lakehouse)
    else:
        stop_pipeline_server(build_dir)  # its JVM would hold the Derby metastore: one JVM at a time
    source = mirror_source(source_path)
    built_from = _read_json(lakehouse / BUILT_FROM)
    if source and built_from and not _same_source(built_from, source) and not full_refresh and not dry_run:
        full_refresh = True
        if echo is not None:
            echo("the mirror now holds another bucket's objects (a new local stack?): full refresh of every table")
    command = _pipelines_command(spec_path, full_refresh, dry_run)
    with _marked_run(build_dir) if reuse else contextlib.nullcontext():
        run = _run_subprocess(
            command, env, lakehouse, log_path, spec_path, build_dir, full_refresh, timeout, echo, reuse
        )
    if source and not dry_run:
        (lakehouse / BUILT_FROM).write_text(json.dumps(source))
    return run


def _run_subprocess(
    command, env, lakehouse, log_path, spec_path, build_dir, full_refresh, timeout, echo, reuse
):
    flows: dict[str, str] = {}
    timeline: list[tuple[str, str, str]] = []
    run_states: list[str] = []
    server: list[tuple[str, int]] = []
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
                if match := SERVER_LINE.search(line):
                    server.append((match.group(1), int(match.group(2))))
                if echo is not None and PROGRESS_LINE.search(line):
                    echo(_short_progress(line))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            returncode = _wait_watching_server(process, timeout, server, lakehouse if reuse else None)
        except _ServerDied:
            _kill_group(process)
            reader.join(timeout=10)
            raise _server_died(build_dir, log_path) from None
        except subprocess.TimeoutExpired:
            _kill_group(process)
            reader.join(timeout=10)
            # the server may be stuck in (or starting for) this run: the next run starts a fresh one
            stopped = reuse and stop_pipeline_server(build_dir)
            raise PipelineError(
                f"pipeline run timed out after {timeout:.0f} s"
                + ("; stopped the build folder's Spark Connect server" if stopped else "")
                + f"; log: {log_path}\n{_log_tail(log_path)}"
            ) from None
        except BaseException:  # e.g. KeyboardInterrupt (a notebook's interrupt): do not leave the run going
            _kill_group(process)
            if reuse:  # its flows may still be running in the server
                stop_pipeline_server(build_dir)
            raise
        reader.join(timeout=30)
    duration = time.monotonic() - started
    if returncode != 0 and reuse and server and not procs.is_ours(server[-1][1], server_signature(lakehouse)):
        raise _server_died(build_dir, log_path)
    if returncode != 0 or (run_states and run_states[-1] != "COMPLETED"):
        failed = sorted(name for name, state in flows.items() if state == "FAILED")
        raise PipelineError(
            f"pipeline run failed (exit code {returncode}"
            + (f", failed flows: {', '.join(failed)}" if failed else "")
            + f") after {duration:.0f} s; full log: {log_path}\n{_log_tail(log_path)}"
        )
    if echo is not None:
        echo(f"pipeline run finished in {duration:.1f} s (log: {log_path})")
    server_state, server_pid = server[-1] if server else ("in-process", None)
    return PipelineRun(
        duration, log_path, spec_path, full_refresh, dict(flows), list(timeline), server_state, server_pid
    )


class _ServerDied(Exception):
    pass


def _wait_watching_server(process: subprocess.Popen, timeout: float, server: list, lakehouse: Path | None) -> int:
    """``process.wait(timeout)``; raises _ServerDied within about a second of the Spark server this
    run uses (the last one announced in ``server``) going away: the client would retry for minutes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return process.wait(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise
        if lakehouse is not None and server and not procs.is_ours(server[-1][1], server_signature(lakehouse)):
            raise _ServerDied


def _server_died(build_dir: str | Path, log_path: Path) -> PipelineError:
    """The error of a run whose Spark server died; forgets that server so the next run starts one."""
    stop_pipeline_server(build_dir)
    logs = server_dir(build_dir) / "logs"
    outs = sorted(logs.glob("spark-*.out"), key=lambda p: p.stat().st_mtime)
    return PipelineError(
        f"the Spark server died (see its log {outs[-1] if outs else logs}): run the cell again\n"
        f"run log: {log_path}\n{_log_tail(log_path)}"
    )


def _short_progress(line: str) -> str:
    """``2026-11-26 01:13:15: Flow spark_catalog.bronze.bronze_events has COMPLETED.``
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
    """Forget every table, checkpoint and the metastore: the next run starts from nothing. Stops the
    build folder's Spark Connect server first (it holds the metastore open)."""
    stop_pipeline_server(build_dir)
    shutil.rmtree(lakehouse_dir(build_dir), ignore_errors=True)


# --- the build folder's long-lived Spark Connect server ----------------------------------------------
# The run subprocess starts it with pyspark's opt-in (pyspark.sql.connect.local_server: the
# ``sbin/start-connect-server.sh`` daemon, bound to 127.0.0.1, auth token in a 0600 discovery file)
# with the discovery file in this build folder, so a server is never shared between build folders;
# this module only checks it (pid, settings, does it answer) and stops it.
SERVER_ENV = "KINESIS_LAB_PIPELINE_SERVER"  # set for the run subprocess: the lakehouse whose server to use
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
# ``-Dkinesis_lab.lakehouse=<lakehouse>`` on the server's java command line
SERVER_MARKER = "kinesis_lab.lakehouse"
SERVER_STATE = "kinesis-lab-server.json"  # next to the discovery file: pid + fingerprint of the settings
SERVER_PROBE_TIMEOUT = 20.0  # seconds for a running server to answer (gRPC handshake) before it is replaced
SERVER_STOP_TIMEOUT = 30.0  # seconds between SIGTERM and SIGKILL
# a server nobody stopped stops itself after this long without a run (0: never); see _watch_server
SERVER_IDLE_ENV = "KINESIS_LAB_SERVER_IDLE_TIMEOUT"
SERVER_IDLE_TIMEOUT = 1800.0
RUN_MARK = "run-state"  # next to the discovery file: "running <pid of run_pipeline's process>" or "idle"


def server_dir(build_dir: str | Path) -> Path:
    """``lakehouse/connect-server``: the server's discovery file (0600: it holds the auth token),
    pid file and logs (``logs/``)."""
    return lakehouse_dir(build_dir) / "connect-server"


def discovery_path(build_dir: str | Path) -> Path:
    """The discovery file of the build folder's server (pyspark's ``SPARK_LOCAL_CONNECT_DISCOVERY``):
    ``SPARK_LOCAL_CONNECT_DISCOVERY=<this> python -m pyspark.sql.connect.local_server --stop``
    stops the server too."""
    return server_dir(build_dir) / "discovery.json"


def server_conf(static_conf: Mapping[str, str], lakehouse: str | Path) -> dict[str, str]:
    """The settings a build folder's server starts with: the static ones (catalog, warehouse,
    metastore), plus a marker on the java command line naming the lakehouse, by which its server is
    found and stopped even when its discovery file is gone (``lakehouse/`` deleted under it)."""
    conf = dict(static_conf)
    java_options = [
        conf.get("spark.driver.extraJavaOptions", ""),
        f'"-D{SERVER_MARKER}={Path(lakehouse).resolve()}"',
    ]
    conf["spark.driver.extraJavaOptions"] = " ".join(filter(None, java_options))
    # the daemon logs at INFO by default (every plan it receives: ~1.4 MB per run); the in-process
    # server of reuse_server=False logs at WARN
    conf.setdefault("spark.log.level", "WARN")
    return conf


def server_pids(build_dir: str | Path) -> list[int]:
    """The Spark Connect servers (java processes of this user) started for this build folder."""
    return _server_pids(lakehouse_dir(build_dir).resolve())


def server_signature(lakehouse: str | Path) -> procs.Signature:
    """The build folder's server: its class and the ``-Dkinesis_lab.lakehouse=<lakehouse>`` marker."""
    return procs.Signature.of(SERVER_CLASS, f"-D{SERVER_MARKER}", lakehouse)


def _server_pids(lakehouse: Path) -> list[int]:
    return procs.find(server_signature(lakehouse))


def _stop_pids(lakehouse: Path, pids: list[int], timeout: float = SERVER_STOP_TIMEOUT, started: str | None = None) -> None:
    """SIGTERM (the server shuts Spark down cleanly), SIGKILL after ``timeout``; returns once gone.
    Only pids that are provably this lakehouse's server are signalled."""
    signature = server_signature(lakehouse)
    procs.stop([(pid, signature, started) for pid in pids], grace=timeout)
    left = [pid for pid in pids if procs.is_ours(pid, signature, started)]
    if left:
        raise PipelineError(f"could not stop the Spark Connect server(s) {left}")


@contextlib.contextmanager
def _discovery_lock(discovery: Path, timeout: float = 10.0):
    """pyspark's lock on the discovery file (``<file>.lock``), taken with a bounded wait: a server
    start holds it up to ~2 minutes; after ``timeout`` we go on without it. No folder, no lock (and
    the folder is not created)."""
    if not discovery.parent.is_dir():
        yield
        return
    with open(f"{discovery}.lock", "a+") as handle:
        deadline = time.monotonic() + timeout
        locked = False
        while not locked:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        try:
            yield
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _marked_run(build_dir: str | Path):
    """Tell the server's watchdog that a run is going on (it never stops a busy server)."""
    mark = server_dir(build_dir) / RUN_MARK
    mark.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    mark.write_text(f"running {os.getpid()}")
    try:
        yield
    finally:
        if mark.parent.is_dir():
            mark.write_text("idle")


def _busy(discovery: Path) -> bool:
    try:
        state = (discovery.parent / RUN_MARK).read_text().split()
    except OSError:
        return False
    return len(state) == 2 and state[0] == "running" and state[1].isdigit() and procs.alive(int(state[1]))


def _watch_server(
    lakehouse: Path, pid: int, idle_timeout: float, poll: float = 2.0, started: str | None = None
) -> None:
    """A small detached process per server, started with it: stops the server when ``lakehouse/``
    is deleted under it (its metastore and tables are gone), when its discovery file no longer names
    it (forgotten or replaced), or after ``idle_timeout`` s without a run, so a server nobody stopped
    does not stay forever; exits when the server does (or its pid is no longer that server)."""
    discovery = lakehouse / "connect-server" / "discovery.json"
    last_busy = time.time()
    while procs.is_ours(pid, server_signature(lakehouse), started):
        time.sleep(poll)
        if _busy(discovery):
            last_busy = time.time()
            continue
        with contextlib.suppress(OSError):
            last_busy = max(last_busy, (discovery.parent / RUN_MARK).stat().st_mtime)
        orphan = not discovery.exists() or _read_json(discovery).get("pid", pid) != pid
        idle = idle_timeout > 0 and time.time() - last_busy > idle_timeout
        if orphan or idle:
            with _discovery_lock(discovery, timeout=60):
                if not orphan and _busy(discovery):  # a run began meanwhile
                    continue
                _stop_pids(lakehouse, [pid], started=started)
                if not orphan:
                    _forget_server(discovery)
            return


def _start_watchdog(lakehouse: Path, pid: int, started: str | None) -> None:
    try:
        idle_timeout = float(os.environ.get(SERVER_IDLE_ENV) or SERVER_IDLE_TIMEOUT)
    except ValueError:
        idle_timeout = SERVER_IDLE_TIMEOUT
    log = lakehouse / "connect-server" / "logs" / "watchdog.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "watch-server", str(lakehouse), str(pid)]
            + [str(idle_timeout), started or ""],
            cwd="/",  # not in the lakehouse: it may be deleted
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
            start_new_session=True,  # outlives the run; a timed-out run's kill does not reach it
        )


def _forget_server(discovery: Path) -> None:
    """Remove the discovery file, the daemon's pid file and our state file."""
    for path in (discovery, *discovery.parent.glob("spark-*.pid"), discovery.parent / SERVER_STATE):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def stop_pipeline_server(build_dir: str | Path) -> bool:
    """Stop the build folder's Spark Connect server (and any left over from a deleted ``lakehouse/``);
    True if there was one. Safe to call when none runs; returns once the JVM is gone. A run still
    going in that server fails."""
    pids = server_pids(build_dir)
    discovery = discovery_path(build_dir)
    with _discovery_lock(discovery):
        _stop_pids(lakehouse_dir(build_dir).resolve(), pids)
        if discovery.parent.is_dir():
            _forget_server(discovery)
    return bool(pids)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _answers(host: str, port: int, timeout: float) -> bool:
    """Does the server complete a gRPC (HTTP/2) handshake within ``timeout``? A stopped or wedged
    JVM can keep its port open (the kernel accepts the connection) without ever answering."""
    import grpc

    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def _connect_to_build_server(static_conf: Mapping[str, str], lakehouse: Path):
    """(In the run subprocess) a new session in the build folder's server, started if need be:
    replaced if it runs with other settings (static settings apply only when a server starts), does
    not answer, or is not the one the discovery file names."""
    from pyspark.sql.connect.local_server import reuse_or_start_local_connect_server
    from pyspark.sql.connect.session import SparkSession as RemoteSparkSession
    from pyspark.version import __version__

    discovery = lakehouse / "connect-server" / "discovery.json"
    discovery.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(discovery.parent, 0o700)  # the discovery file holds the server's auth token
    os.environ["SPARK_LOCAL_CONNECT_DISCOVERY"] = str(discovery)
    seed = server_conf(static_conf, lakehouse)
    identity = json.dumps([seed, __version__, sys.executable, os.environ.get("PYTHONPATH")], sort_keys=True)
    fingerprint = hashlib.sha256(identity.encode()).hexdigest()
    state_path = discovery.parent / SERVER_STATE

    with _discovery_lock(discovery, timeout=60):  # a watchdog may be stopping the server (<= 40 s)
        live = _server_pids(lakehouse)
        recorded = _read_json(discovery)
        problem = ""
        if live:
            if recorded.get("pid") not in live or len(live) > 1:
                problem = "not the server the discovery file names"
            elif _read_json(state_path).get("fingerprint") != fingerprint:
                problem = "started with other settings"
            elif not _answers(recorded.get("host", "localhost"), recorded["port"], SERVER_PROBE_TIMEOUT):
                problem = f"does not answer within {SERVER_PROBE_TIMEOUT:.0f} s"
            if problem:
                print(
                    f"Spark Connect server: replacing pid {', '.join(map(str, live))}: {problem}", flush=True
                )
                _stop_pids(lakehouse, live, timeout=5.0 if "answer" in problem else SERVER_STOP_TIMEOUT)
        elif recorded:
            print(f"Spark Connect server: pid {recorded.get('pid')} is gone, starting a new one", flush=True)
        if problem or (recorded and not live):
            _forget_server(discovery)
    previous = recorded.get("pid") if live and not problem else None

    started = time.monotonic()
    # takes pyspark's lock itself; its waits are bounded (120 s for the script, 120 s for the port)
    url = reuse_or_start_local_connect_server(
        "local[*]", {**seed, "spark.local.connect.server.port": str(_free_port())}
    )
    pid = _read_json(discovery).get("pid")
    reused = previous is not None and pid == previous  # pyspark may still have found it unusable
    if not reused:
        if pid not in _server_pids(lakehouse):
            raise PipelineError(f"the Spark Connect server (pid {pid}) was started without its marker")
        started_at = procs.start_time(pid)
        state_path.write_text(json.dumps({"pid": pid, "fingerprint": fingerprint, "started": started_at}))
        _start_watchdog(lakehouse, pid, started_at)
    took = f" in {time.monotonic() - started:.1f} s" if not reused else ""
    print(
        f"Spark Connect server {'reused' if reused else 'started'}: pid {pid}, {url}{took}"
        f" (logs: {discovery.parent / 'logs'})",
        flush=True,
    )
    os.environ["SPARK_REMOTE"] = url  # the CLI's SparkSession.builder.getOrCreate() connects here
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
    return RemoteSparkSession.builder.remote(url).getOrCreate()


# --- reading the results without Spark -------------------------------------------------------------
def table_paths(build_dir: str | Path) -> dict[str, Path]:
    """Table name -> its parquet folder in the local warehouse (tables that exist so far, every layer)."""
    paths = {}
    for schema in LAYER_SCHEMAS:
        schema_dir = warehouse_dir(build_dir) / f"{schema}.db"
        if schema_dir.is_dir():
            paths.update({p.name: p for p in sorted(schema_dir.iterdir())
                          if p.is_dir() and not p.name.startswith((".", "_")) and p.name.startswith(schema + "_")})
    return paths


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


def read_table(build_dir: str | Path, name: str, columns: list[str] | None = None):
    """A pipeline table as a pandas DataFrame (read with pyarrow; Spark is not needed)."""
    import pandas as pd
    import pyarrow.parquet as pq

    paths = table_paths(build_dir)
    if name not in paths:
        raise KeyError(f"no table {schema_of(name)}.{name} in {warehouse_dir(build_dir)} "
                       f"(has: {', '.join(paths) or 'none'})")
    files = _data_files(paths[name])
    if not files:
        return pd.DataFrame(columns=columns or [])
    tables = [pq.read_table(f, columns=columns) for f in files]
    import pyarrow as pa

    # integers stay integers when a value is missing (a quarantined Year shows 2018, not 2018.0)
    nullable_ints = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
                     pa.int64(): pd.Int64Dtype()}
    return pa.concat_tables(tables, promote_options="default").to_pandas(types_mapper=nullable_ints.get)


def table_rows(build_dir: str | Path, name: str) -> int:
    """Row count from the parquet footers (no data read)."""
    import pyarrow.parquet as pq

    paths = table_paths(build_dir)
    if name not in paths:
        return 0
    return sum(pq.ParquetFile(f).metadata.num_rows for f in _data_files(paths[name]))


def pipeline_summary(build_dir: str | Path) -> dict:
    """Rows per layer, quarantined rows per broken rule, rows per gold table, and the table folders."""
    paths = table_paths(build_dir)
    by_rule: dict[str, int] = {}
    if QUARANTINE_TABLE in paths:
        for rules in read_table(build_dir, QUARANTINE_TABLE, ["broken_rules"])["broken_rules"]:
            for rule in rules if rules is not None else []:
                by_rule[rule] = by_rule.get(rule, 0) + 1
    return {
        "bronze_rows": table_rows(build_dir, BRONZE_TABLE),
        "silver_rows": table_rows(build_dir, SILVER_TABLE),
        "quarantine_rows": table_rows(build_dir, QUARANTINE_TABLE),
        "quarantine_by_rule": dict(sorted(by_rule.items(), key=lambda item: (-item[1], item[0]))),
        "gold_tables": {name: table_rows(build_dir, name) for name in paths if name.startswith(GOLD_PREFIX)},
        "table_paths": {name: str(path) for name, path in paths.items()},
    }


# --- entry point of the pipeline subprocess (see _pipelines_command) ----------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _create_schemas(spark, default_schema: str | None) -> None:
    for schema in dict.fromkeys(filter(None, (default_schema, *LAYER_SCHEMAS))):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{schema}`")


def _pipelines_cli() -> None:
    """The stock ``spark-pipelines`` CLI (pyspark.pipelines.cli.main) with two changes made before it
    runs: it uses the build folder's long-lived Spark Connect server (SERVER_ENV set, see
    _connect_to_build_server) or starts its own listening on a free local port, not the fixed 15002
    (so runs from several notebooks or tests do not collide); and the spec's database and the layer
    schemas the tables are published to (``bronze.bronze_events``) exist: the CLI fails with
    SCHEMA_NOT_FOUND otherwise (Databricks creates them itself), and pipeline files may not run DDL."""
    from pyspark.pipelines import cli
    from pyspark.sql.connect.session import SparkSession as RemoteSparkSession

    args = sys.argv[1:]
    spec = cli.load_pipeline_spec(Path(args[args.index("--spec") + 1])) if "--spec" in args else None
    if spec is not None and os.environ.get(SERVER_ENV):
        static_conf = json.loads(os.environ.get(STATIC_CONF_ENV) or "{}")
        spark = _connect_to_build_server(static_conf, Path(os.environ[SERVER_ENV]))
        _create_schemas(spark, spec.database)
    elif spec is not None:
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
        _create_schemas(spark, spec.database)
        # cli.run's SparkSession.builder.getOrCreate() now returns this session
    cli.main()


if __name__ == "__main__":
    if sys.argv[1:2] == ["watch-server"]:
        _watch_server(Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), started=(sys.argv[5:] or [""])[0] or None)
    else:
        _pipelines_cli()
