"""The local stack: a moto server (AWS APIs on 127.0.0.1) and the local Firehose delivery service.

Both run as background processes that outlive the shell or notebook kernel that started them, so
every notebook talks to the same AWS state. ``<state_dir>/stack.json`` records their PIDs and the
port; ``<state_dir>/local.env`` is a dotenv file with what boto3 needs to reach them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class StackError(RuntimeError):
    """The local stack could not be started or reached; the message says how to fix it."""


@dataclass
class StackState:
    port: int
    moto_pid: int
    firehose_pid: int
    region: str

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"


def _state_file(state_dir: Path) -> Path:
    return Path(state_dir) / "stack.json"


def env_file(state_dir: Path) -> Path:
    return Path(state_dir) / "local.env"


def local_env(endpoint: str, region: str) -> dict[str, str]:
    """The environment boto3 (and the AWS CLI) need to talk to the local stack instead of AWS."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": region, "AWS_REGION": region, **DUMMY_CREDENTIALS}


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); treat it as dead
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def moto_answers(endpoint: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def read_state(state_dir: Path) -> StackState | None:
    path = _state_file(state_dir)
    if not path.is_file():
        return None
    try:
        return StackState(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def status(state_dir: Path) -> dict:
    """What runs: one entry per process, and whether moto answers on its port."""
    state = read_state(state_dir)
    if state is None:
        return {"up": False, "moto": None, "firehose": None, "endpoint": None}
    moto_ok = pid_alive(state.moto_pid) and moto_answers(state.endpoint)
    fh_ok = pid_alive(state.firehose_pid)
    return {
        "up": moto_ok and fh_ok,
        "endpoint": state.endpoint,
        "moto": {"pid": state.moto_pid, "running": moto_ok},
        "firehose": {"pid": state.firehose_pid, "running": fh_ok},
    }


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # outlives the shell / kernel that started it
            close_fds=True,
        )


def up(state_dir: Path, region: str, port: int | None = None, timeout: float = 30.0) -> tuple[StackState, bool]:
    """Start moto + the local Firehose service unless they already run. Returns (state, started_now)."""
    state_dir = Path(state_dir)
    current = status(state_dir)
    if current["up"]:
        return read_state(state_dir), False
    if current["endpoint"]:  # half up (one process died): clean up before starting again
        down(state_dir)
    if port is not None and port_in_use(port):
        raise StackError(
            f"port {port} on {HOST} is already in use: pick another with --port N, or omit --port to use a free one"
        )
    port = port or free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    logs = state_dir / "logs"
    endpoint = f"http://{HOST}:{port}"
    env = {**os.environ, **local_env(endpoint, region), "PYTHONUNBUFFERED": "1"}

    moto = _spawn([sys.executable, "-m", "kinesis_lab.moto_server", "--host", HOST, "--port", str(port)],
                  logs / "moto.log", env)
    deadline = time.monotonic() + timeout
    while not moto_answers(endpoint):
        if moto.poll() is not None:
            raise StackError(f"moto server exited at start (code {moto.returncode}); see {logs / 'moto.log'}")
        if time.monotonic() > deadline:
            _terminate(moto.pid)
            raise StackError(f"moto server did not answer on {endpoint} within {timeout:.0f} s; see {logs / 'moto.log'}")
        time.sleep(0.1)

    try:
        firehose = _spawn_firehose(state_dir, env)
    except StackError:
        _terminate(moto.pid)
        raise

    state = StackState(port=port, moto_pid=moto.pid, firehose_pid=firehose.pid, region=region)
    _state_file(state_dir).write_text(json.dumps(state.__dict__, indent=2))
    env_file(state_dir).write_text(
        "# written by `kinesis-lab up`: load it to point boto3 / the AWS CLI at the local stack\n"
        + "".join(f"{k}={v}\n" for k, v in local_env(endpoint, region).items())
    )
    return state, True


def _spawn_firehose(state_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    log = Path(state_dir) / "logs" / "firehose.log"
    firehose = _spawn([sys.executable, "-m", "kinesis_lab.local_firehose", "--state-dir",
                       str(Path(state_dir) / "firehose")], log, env)
    time.sleep(0.3)
    if firehose.poll() is not None:
        raise StackError(f"local Firehose service exited at start; see {log}")
    return firehose


def restart_firehose(state_dir: Path, env: dict[str, str] | None = None) -> int:
    """Restart the local Firehose service with ``env`` over the stack's environment: e.g. the access keys of
    an IAM user named ``firehose.amazonaws.com``, which stands in for the Firehose service while IAM
    enforcement is on (the stack's dummy keys are refused then). Returns the new PID."""
    state = read_state(state_dir)
    if state is None or not status(state_dir)["moto"]["running"]:
        raise StackError("the local stack is not running: start it with `kinesis-lab up`")
    _terminate(state.firehose_pid)
    full_env = {**os.environ, **local_env(state.endpoint, state.region), "PYTHONUNBUFFERED": "1", **(env or {})}
    state.firehose_pid = _spawn_firehose(state_dir, full_env).pid
    _state_file(state_dir).write_text(json.dumps(state.__dict__, indent=2))
    return state.firehose_pid


def _terminate(pid: int, grace: float = 5.0) -> None:
    if not pid_alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)  # each process leads its own session / group
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def down(state_dir: Path) -> list[int]:
    """Stop exactly the processes ``up`` started (recorded PIDs). Returns the PIDs that were stopped."""
    state = read_state(state_dir)
    if state is None:
        return []
    stopped = []
    for pid in (state.firehose_pid, state.moto_pid):  # the reader first, then the server it reads from
        if pid_alive(pid):
            _terminate(pid)
            stopped.append(pid)
    _state_file(state_dir).unlink(missing_ok=True)
    env_file(state_dir).unlink(missing_ok=True)
    return stopped


def reset(endpoint: str) -> None:
    """Wipe every resource in the moto server (``POST /moto-api/reset``)."""
    req = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(req, timeout=10).close()


def set_iam_enforcement(endpoint: str, on: bool) -> None:
    """Make the moto server check signatures and IAM policies (``on``) or accept anything (off, the default).

    ``POST /moto-api/reset-auth`` with the number of requests to let through unchecked: ``0`` = check from
    now on, ``inf`` = never. While it is on, the dummy keys of ``local_env`` are refused (InvalidAccessKeyId):
    use the keys of an IAM user created in moto beforehand. Only S3 checks resource scoping; Kinesis and
    Firehose actions are checked against ``*`` (a moto 5.2 limitation)."""
    req = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0" if on else b"inf",
        method="POST",
        headers={"Content-Type": "text/plain"},  # a form content type loses the body
    )
    urllib.request.urlopen(req, timeout=10).close()
