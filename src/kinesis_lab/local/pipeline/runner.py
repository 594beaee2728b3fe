"""Running the pipeline: ``spark_settings`` and ``render_spec`` make the run's settings and spec,
``run_pipeline`` runs it in a subprocess (``spark_cli``, the ``spark-pipelines`` CLI) and watches it:
its output (progress, flow states, the server it uses), its timeout, and its Spark server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kinesis_lab.cloud.config import LAYER_SCHEMAS, unwritable, writable_folder
from kinesis_lab.local import procs
from kinesis_lab.local.pipeline.class_archive import archive_java_options
from kinesis_lab.local.pipeline.mirror import BUILT_FROM, mirror_source, same_source
from kinesis_lab.local.pipeline.paths import PipelineError, lakehouse_dir, read_json, server_dir
from kinesis_lab.local.pipeline.server import (
    SERVER_ENV,
    cli_command,
    marked_run,
    server_signature,
    stop_pipeline_server,
)

SPEC_NAME = "spark-pipeline.yml"
DEFAULT_TIMEOUT = 900  # seconds; a run takes 1-2 minutes on 2 cores
JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"  # the Spark JVM's, see spark_settings

# pipeline log lines worth showing while it runs: flow state changes, the end of the run, the server used
PROGRESS_LINE = re.compile(
    r"Flow \S+ (is STARTING|has COMPLETED|has FAILED|is FAILED)|Run is \w+|^Spark Connect server\b"
)
SERVER_LINE = re.compile(r"^Spark Connect server (started|reused): pid (\d+)")
FLOW_STATE = re.compile(r"(?:(\d\d:\d\d:\d\d): )?Flow '?(?:\S+\.)?(\w+)'? (?:is|has) ([A-Z]+)")
RUN_STATE = re.compile(r"Run is ([A-Z]+)")
RUN_ENDED = {"COMPLETED", "FAILED", "CANCELED"}


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
        # a few hundred rows: compiling code for every query (and re-planning it adaptively) costs more
        # than it saves; with the serial GC below: the first run 13 %, a later one 48 % less CPU (benchmark 8)
        "spark.sql.codegen.wholeStage": "false",
        "spark.sql.codegen.factoryMode": "NO_CODEGEN",
        "spark.sql.adaptive.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",  # plain timestamps for pyarrow
        "spark.sql.catalogImplementation": "hive",  # else a second run fails with LOCATION_ALREADY_EXISTS
        "spark.sql.warehouse.dir": str(lakehouse / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={lakehouse / 'metastore_db'};create=true"
        ),
        # derby.log in the lakehouse; C1 only (no C2 JIT): Spark starts ~10 s faster on 2 cores and
        # the runs (small data) are no slower; the serial collector: no GC threads competing for 2 cores
        # (+ the opt-in class archive: class_archive)
        "spark.driver.extraJavaOptions": " ".join(
            filter(None, [f"-Dderby.system.home={lakehouse}", JAVA_OPTIONS, archive_java_options()])
        ),
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
    """``spark-pipelines run --spec ...``: the same CLI (pyspark.pipelines.cli), started from
    ``spark_cli`` (see server.cli_command) with plain Python, which starts one Spark Connect JVM; the
    ``spark-pipelines`` script goes through spark-submit, which starts a second JVM only to
    launch Python (about 10 s more per run)."""
    action = "dry-run" if dry_run else "run"
    command = cli_command(action, "--spec", str(spec_path))
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
    busy = f"another pipeline run is using {Path(build_dir).resolve()}: wait until it finishes"
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(procs.file_lock(lock_path, 0, busy))
        except TimeoutError:  # before OSError: it is one
            raise PipelineError(busy) from None
        except OSError as exc:
            raise unwritable(build_dir, exc) from None
        yield


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
    env = run_env(pipeline_dir, static_conf)
    if reuse:
        env[SERVER_ENV] = str(lakehouse)
    else:
        stop_pipeline_server(build_dir)  # its JVM would hold the Derby metastore: one JVM at a time
    source = mirror_source(source_path)
    built_from = read_json(lakehouse / BUILT_FROM)
    if source and built_from and not same_source(built_from, source) and not full_refresh and not dry_run:
        full_refresh = True
        if echo is not None:
            echo(
                "the mirror now holds another bucket's objects (a new local stack?): full refresh of every table"
            )
    drop_partial_checkpoint_writes(lakehouse)
    command = _pipelines_command(spec_path, full_refresh, dry_run)
    with marked_run(build_dir) if reuse else contextlib.nullcontext():
        run = _run_subprocess(
            command, env, lakehouse, log_path, spec_path, build_dir, full_refresh, timeout, echo, reuse
        )
    if source and not dry_run:
        (lakehouse / BUILT_FROM).write_text(json.dumps(source))
    return run


def drop_partial_checkpoint_writes(lakehouse: Path) -> list[Path]:
    """Delete what a killed run left half-written in its streaming checkpoints: ``.<n>.<uuid>.tmp`` files in
    ``offsets/`` and ``commits/`` (Spark writes a temporary file, then renames it). Spark never reads them,
    but a flow restarting at batch 0 refuses an ``offsets/`` folder that is not empty
    (STATE_STORE_CHECKPOINT_LOCATION_NOT_EMPTY), so the next run would fail. Called with no run going."""
    checkpoints = lakehouse / "storage" / "_checkpoints"
    partial = [p for p in checkpoints.rglob(".*.tmp") if p.parent.name in ("offsets", "commits")]
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def run_env(pipeline_dir: Path, static_conf: Mapping[str, str]) -> dict[str, str]:
    """The environment of a run subprocess (and of the warm-up's): the build folder's server is
    started with it, and a later run reuses that server only if it would start the same one (see
    server.connect_to_build_server's fingerprint: settings, pyspark, Python, PYTHONPATH)."""
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYTHONUNBUFFERED": "1",  # progress lines as they happen
        "PYTHONPATH": os.pathsep.join(filter(None, [str(pipeline_dir), os.environ.get("PYTHONPATH")])),
        STATIC_CONF_ENV: json.dumps(static_conf),
    }
    env.pop(SERVER_ENV, None)
    return env


@dataclass
class _Output:
    """What the run's output has said so far (read by a thread while the run goes on)."""

    echo: Callable[[str], None] | None
    flows: dict[str, str] = field(default_factory=dict)
    timeline: list[tuple[str, str, str]] = field(default_factory=list)
    run_states: list[str] = field(default_factory=list)
    server: list[tuple[str, int]] = field(default_factory=list)  # ("started"/"reused", pid) as announced

    def pump(self, process: subprocess.Popen, log) -> None:
        for line in process.stdout:
            log.write(line)
            log.flush()  # so the log can be followed while the run goes on
            if match := FLOW_STATE.search(line):
                clock, flow, state = match.groups()
                self.flows[flow] = state
                self.timeline.append((clock or "", flow, state))
            if match := RUN_STATE.search(line):
                self.run_states.append(match.group(1))
            if match := SERVER_LINE.search(line):
                self.server.append((match.group(1), int(match.group(2))))
            if self.echo is not None and PROGRESS_LINE.search(line):
                self.echo(_short_progress(line))


def _run_subprocess(
    command, env, lakehouse, log_path, spec_path, build_dir, full_refresh, timeout, echo, reuse
):
    output = _Output(echo)
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
        reader = threading.Thread(target=output.pump, args=(process, log), daemon=True)
        reader.start()
        returncode = _wait_for_run(
            process, reader, output, timeout, lakehouse if reuse else None, build_dir, log_path
        )
        reader.join(timeout=30)
    duration = time.monotonic() - started
    server = output.server
    if returncode != 0 and reuse and server and not procs.is_ours(server[-1][1], server_signature(lakehouse)):
        raise _server_died(build_dir, log_path)
    stopped = False
    if returncode != 0 and reuse and not (output.run_states and output.run_states[-1] in RUN_ENDED):
        # the run's process died before the run ended (killed from outside): its flows may still be
        # running in the server, and would collide with the next run's; none may outlive the run
        stopped = stop_pipeline_server(build_dir)
    if returncode != 0 or (output.run_states and output.run_states[-1] != "COMPLETED"):
        failed = sorted(name for name, state in output.flows.items() if state == "FAILED")
        raise PipelineError(
            f"pipeline run failed (exit code {returncode}"
            + (f", failed flows: {', '.join(failed)}" if failed else "")
            + f") after {duration:.0f} s"
            + ("; stopped the build folder's Spark Connect server (the run's flows may have been running in it)"
               if stopped else "")
            + f"; full log: {log_path}\n{_log_tail(log_path)}"
        )
    if echo is not None:
        echo(f"pipeline run finished in {duration:.1f} s (log: {log_path})")
    server_state, server_pid = server[-1] if server else ("in-process", None)
    return PipelineRun(
        duration,
        log_path,
        spec_path,
        full_refresh,
        dict(output.flows),
        list(output.timeline),
        server_state,
        server_pid,
    )


def _wait_for_run(
    process, reader, output: _Output, timeout: float, lakehouse: Path | None, build_dir, log_path
) -> int:
    """The run's exit code; on a dead server, a timeout or an interrupt, the run is killed (and the
    server stopped where it may be stuck in the run: ``lakehouse`` is set when it uses one)."""
    try:
        return _wait_watching_server(process, timeout, output.server, lakehouse)
    except _ServerDied:
        _kill_group(process)
        reader.join(timeout=10)
        raise _server_died(build_dir, log_path) from None
    except subprocess.TimeoutExpired:
        _kill_group(process)
        reader.join(timeout=10)
        # the server may be stuck in (or starting for) this run: the next run starts a fresh one
        stopped = lakehouse is not None and stop_pipeline_server(build_dir)
        raise PipelineError(
            f"pipeline run timed out after {timeout:.0f} s"
            + ("; stopped the build folder's Spark Connect server" if stopped else "")
            + f"; log: {log_path}\n{_log_tail(log_path)}"
        ) from None
    except BaseException:  # e.g. KeyboardInterrupt (a notebook's interrupt): do not leave the run going
        _kill_group(process)
        if lakehouse is not None:  # its flows may still be running in the server
            stop_pipeline_server(build_dir)
        raise


class _ServerDied(Exception):
    pass


def _wait_watching_server(
    process: subprocess.Popen, timeout: float, server: list, lakehouse: Path | None
) -> int:
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
