"""The build folder's long-lived Spark Connect server: found by its marker, checked, stopped, and
watched by a small detached process (the watchdog) so a server nobody stopped does not run forever.

The run subprocess starts it with pyspark's opt-in (pyspark.sql.connect.local_server: the
``sbin/start-connect-server.sh`` daemon, bound to 127.0.0.1, auth token in a 0600 discovery file)
with the discovery file in this build folder, so a server is never shared between build folders;
only ``connect_to_build_server`` (in the run subprocess, or the warm-up's: see warmup) starts one,
holding the build folder's START_LOCK; the rest checks and stops it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from kinesis_lab.local import procs
from kinesis_lab.local.pipeline.paths import (
    PipelineError,
    discovery_path,
    lakehouse_dir,
    read_json,
    server_dir,
)

SERVER_ENV = "KINESIS_LAB_PIPELINE_SERVER"  # set for the run subprocess: the lakehouse whose server to use
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
# ``-Dkinesis_lab.lakehouse=<lakehouse>`` on the server's java command line
SERVER_MARKER = "kinesis_lab.lakehouse"
SERVER_STATE = "kinesis-lab-server.json"  # next to the discovery file: pid + fingerprint of the settings
SERVER_PROBE_TIMEOUT = 20.0  # seconds for a running server to answer (gRPC handshake) before it is replaced
SERVER_STOP_TIMEOUT = 30.0  # seconds between SIGTERM and SIGKILL
# a server nobody stopped stops itself after this long without a run (0: never); see watch_server
SERVER_IDLE_ENV = "KINESIS_LAB_SERVER_IDLE_TIMEOUT"
SERVER_IDLE_TIMEOUT = 1800.0
CLI_MODULE = "kinesis_lab.local.pipeline.spark_cli"  # run with -m: the run subprocess and the watchdog
RUN_MARK = "run-state"  # next to the discovery file: "running <pid of run_pipeline's process>" or "idle"
# next to the discovery file: held while a server is checked and started (a run's, or the warm-up's),
# so a second start waits for the one in progress instead of replacing a server still starting
START_LOCK = "start.lock"
SERVER_START_ATTEMPTS = 3  # a free port can be taken by another process before the JVM binds it
SERVER_BIND_TIMEOUT = 60.0  # seconds for a started server to own its listening port
SERVER_START_TIMEOUT = 300.0  # seconds: pyspark's start waits up to 120 s for the script + 120 s for the port


def cli_command(*args: str) -> list[str]:
    """``python -P -m kinesis_lab.local.pipeline.spark_cli <args>``: the run subprocess (``run`` or
    ``dry-run``), the watchdog (``watch-server``) and the warm-up (``warm-server``); -P: its working
    folder is not put on sys.path."""
    return [sys.executable, "-P", "-m", CLI_MODULE, *args]


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


def _stop_pids(
    lakehouse: Path, pids: list[int], timeout: float = SERVER_STOP_TIMEOUT, started: str | None = None
) -> None:
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
def marked_run(build_dir: str | Path):
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


def watch_server(
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
        orphan = not discovery.exists() or read_json(discovery).get("pid", pid) != pid
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
            cli_command("watch-server", str(lakehouse), str(pid), str(idle_timeout), started or ""),
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
    going in that server fails. A server still starting (e.g. warmed up by notebook 00) is waited for
    first (up to SERVER_START_TIMEOUT), then stopped."""
    discovery = discovery_path(build_dir)
    with _start_lock(discovery, wait=True):
        pids = server_pids(build_dir)
        with _discovery_lock(discovery):
            _stop_pids(lakehouse_dir(build_dir).resolve(), pids)
            if discovery.parent.is_dir():
                _forget_server(discovery)
    return bool(pids)


@contextlib.contextmanager
def _start_lock(discovery: Path, wait: bool):
    """The build folder's START_LOCK, waited for up to SERVER_START_TIMEOUT. ``wait=True`` (stopping):
    go on without it after that; ``wait=False`` (starting): PipelineError. No folder, no lock."""
    with contextlib.ExitStack() as held:
        if discovery.parent.is_dir():
            try:
                held.enter_context(procs.file_lock(discovery.parent / START_LOCK, SERVER_START_TIMEOUT, ""))
            except TimeoutError:
                if not wait:
                    raise PipelineError(
                        f"another start of the Spark Connect server of {discovery.parent.parent.parent} has not "
                        f"finished after {SERVER_START_TIMEOUT:.0f} s: see its logs in {discovery.parent / 'logs'}"
                    ) from None
        yield


def start_in_progress(discovery: Path) -> bool:
    """Is a server of this build folder being checked or started right now (START_LOCK held)?"""
    path = discovery.parent / START_LOCK
    if not path.exists():
        return False
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


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


def owns_its_port(pid: object, port: object, timeout: float = SERVER_BIND_TIMEOUT) -> bool:
    """Does the just-started server ``pid`` listen on ``port`` (waited for up to ``timeout`` s)? False
    once it has died (e.g. BindException: another process took the port first). True where the
    platform cannot tell (no /proc)."""
    if not isinstance(pid, int) or not isinstance(port, int):
        return False
    deadline = time.monotonic() + timeout
    while True:
        owns = procs.listens_on(pid, port)
        if owns is None or owns:
            return True
        if not procs.alive(pid) or time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def connect_to_build_server(static_conf: Mapping[str, str], lakehouse: Path):
    """(In the run subprocess) a new session in the build folder's server, started if need be:
    replaced if it runs with other settings (static settings apply only when a server starts), does
    not answer, or is not the one the discovery file names. A start in progress (the warm-up's, or
    another run's) is waited for (START_LOCK), then its server reused."""
    from pyspark.sql.connect.session import SparkSession as RemoteSparkSession

    discovery = lakehouse / "connect-server" / "discovery.json"
    discovery.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(discovery.parent, 0o700)  # the discovery file holds the server's auth token
    os.environ["SPARK_LOCAL_CONNECT_DISCOVERY"] = str(discovery)
    with _start_lock(discovery, wait=False):
        url = _reuse_or_start(static_conf, lakehouse, discovery)
    os.environ["SPARK_REMOTE"] = url  # the CLI's SparkSession.builder.getOrCreate() connects here
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
    return RemoteSparkSession.builder.remote(url).getOrCreate()


def _reuse_or_start(static_conf: Mapping[str, str], lakehouse: Path, discovery: Path) -> str:
    """(With START_LOCK held) the url of the build folder's server, started if need be."""
    from pyspark.sql.connect.local_server import reuse_or_start_local_connect_server
    from pyspark.version import __version__

    from kinesis_lab.local import stack

    seed = server_conf(static_conf, lakehouse)
    identity = json.dumps([seed, __version__, sys.executable, os.environ.get("PYTHONPATH")], sort_keys=True)
    fingerprint = hashlib.sha256(identity.encode()).hexdigest()
    state_path = discovery.parent / SERVER_STATE

    with _discovery_lock(discovery, timeout=60):  # a watchdog may be stopping the server (<= 40 s)
        live = _server_pids(lakehouse)
        recorded = read_json(discovery)
        problem = ""
        if live:
            if recorded.get("pid") not in live or len(live) > 1:
                problem = "not the server the discovery file names"
            elif read_json(state_path).get("fingerprint") != fingerprint:
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
    for attempt in range(1, SERVER_START_ATTEMPTS + 1):
        # takes pyspark's lock itself; its waits are bounded (120 s for the script, 120 s for the port)
        url = reuse_or_start_local_connect_server(
            "local[*]", {**seed, "spark.local.connect.server.port": str(stack.free_port())}
        )
        recorded = read_json(discovery)
        pid = recorded.get("pid")
        reused = previous is not None and pid == previous  # pyspark may still have found it unusable
        if reused or owns_its_port(pid, recorded.get("port")):
            break
        # the free port was taken before the JVM bound it: pyspark saw "something listens" and returned
        print(
            f"Spark Connect server: pid {pid} did not bind port {recorded.get('port')} (another process "
            f"holds it); attempt {attempt} of {SERVER_START_ATTEMPTS}, trying a new port",
            flush=True,
        )
        _stop_pids(lakehouse, [pid] if isinstance(pid, int) else [], timeout=5.0)
        _forget_server(discovery)
    else:
        raise PipelineError(
            f"the Spark Connect server did not bind its port in {SERVER_START_ATTEMPTS} attempts: "
            f"see its logs in {discovery.parent / 'logs'}"
        )
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
    return url
