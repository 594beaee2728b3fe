"""The local stack: a moto server (AWS APIs on 127.0.0.1) and the local Firehose delivery service.

Both run as background processes that outlive the shell or notebook kernel that started them, so
every notebook talks to the same AWS state. ``<state_dir>/stack.json`` records their pids, start
times, the port and the stack's random id; ``<state_dir>/local.env`` is a dotenv file with what boto3
needs to reach them. Each process carries the state folder on its command line: it is signalled only
once that (and its start time) proves it is the lab's (see ``procs``), and found again by it when
the state file is gone. ``up``/``down`` hold a lock in the state folder, one at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kinesis_lab.local import procs
from kinesis_lab.local.moto_server import HEALTH_PATH

HOST = "127.0.0.1"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
MOTO_MODULE, FIREHOSE_MODULE = "kinesis_lab.local.moto_server", "kinesis_lab.local.firehose"
HEALTH_TIMEOUT = 5.0  # seconds per health request; one retry
LOCK_TIMEOUT = 180.0  # seconds an `up`/`down` waits for another one on the same state folder
STATE_LOST = "the local AWS state was lost: run notebooks 01–04 again"


class StackError(RuntimeError):
    """The local stack could not be started or reached; the message says how to fix it."""


@dataclass
class StackState:
    port: int
    moto_pid: int
    firehose_pid: int
    region: str
    stack_id: str = ""  # random, new with every moto start: answered by its health route
    moto_started: str | None = None  # procs.start_time of each process
    firehose_started: str | None = None
    lost: str | None = None  # set when `up` replaced a moto that had died: what the learner must redo

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"


def _state_file(state_dir: Path) -> Path:
    return Path(state_dir) / "stack.json"


def env_file(state_dir: Path) -> Path:
    return Path(state_dir) / "local.env"


def log_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "logs"


def local_env(endpoint: str, region: str) -> dict[str, str]:
    """The environment boto3 (and the AWS CLI) need to talk to the local stack instead of AWS."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": region, "AWS_REGION": region, **DUMMY_CREDENTIALS}


pid_alive = procs.alive


def moto_signature(state_dir: Path) -> procs.Signature:
    return procs.Signature.of(MOTO_MODULE, "--state-dir", state_dir)


def firehose_signature(state_dir: Path) -> procs.Signature:
    return procs.Signature.of(FIREHOSE_MODULE, "--state-dir", Path(state_dir) / "firehose")


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


def moto_identity(endpoint: str, timeout: float = HEALTH_TIMEOUT, attempts: int = 2) -> dict | None:
    """What the lab's moto server at ``endpoint`` says it is (``stack_id``, ``state_dir``, ``pid``), or
    None if nothing answers. Cheap at any data size: the route never reads moto's AWS state."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(endpoint + HEALTH_PATH, timeout=timeout) as resp:
                body = json.loads(resp.read())
            if isinstance(body, dict) and body.get("stack_id"):
                return body
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if attempt + 1 < attempts:
            time.sleep(0.5)
    return None


def moto_answers(endpoint: str, timeout: float = HEALTH_TIMEOUT) -> bool:
    return moto_identity(endpoint, timeout) is not None


def read_state(state_dir: Path) -> StackState | None:
    path = _state_file(state_dir)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(StackState)}
        return StackState(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError, OSError):
        return None


def _write_state(state_dir: Path, state: StackState) -> None:
    tmp = _state_file(state_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(state), indent=2))
    os.replace(tmp, _state_file(state_dir))
    env_file(state_dir).write_text(
        "# written by `kinesis-lab up`: load it to point boto3 / the AWS CLI at the local stack\n"
        + "".join(f"{k}={v}\n" for k, v in local_env(state.endpoint, state.region).items())
    )


def _lab_processes(state_dir: Path, state: StackState | None) -> dict[str, list[tuple[int, str | None]]]:
    """The lab's live processes of this state folder per role, as (pid, start time): the recorded one
    first if it passes the check, then any other found by its command line (e.g. started by hand)."""
    found = {}
    for role, signature in (("moto", moto_signature(state_dir)), ("firehose", firehose_signature(state_dir))):
        live = []
        if state is not None:
            pid, started = getattr(state, f"{role}_pid"), getattr(state, f"{role}_started")
            if procs.is_ours(pid, signature, started):
                live.append((pid, started))
        known = {pid for pid, _ in live}
        live += [(pid, procs.start_time(pid)) for pid in procs.find(signature) if pid not in known]
        found[role] = live
    return found


def _process_status(role: str, pid: int, live: list[tuple[int, str | None]]) -> tuple[bool, str]:
    """(running, note) of the recorded process of ``role``."""
    if live and live[0][0] == pid:
        return True, ""
    if procs.alive(pid):
        note = f"recorded pid {pid} is not the lab's {role} (another program has that pid now): forgotten, left alone"
    else:
        note = f"pid {pid} is not running"
    if live:
        note += f"; the lab's {role} runs as pid {', '.join(str(p) for p, _ in live)} (`kinesis-lab up` adopts it)"
    return False, note


def status(state_dir: Path) -> dict:
    """What runs: one entry per process (pid, running, note), whether moto answers, and notes."""
    state = read_state(state_dir)
    live = _lab_processes(state_dir, state)
    if state is None:
        notes = [f"{role} runs as pid {', '.join(str(p) for p, _ in pids)} without a state file: "
                 "`kinesis-lab down` stops it" for role, pids in live.items() if pids]
        return {"up": False, "moto": None, "firehose": None, "endpoint": None, "notes": notes}
    moto_ok, moto_note = _process_status("moto", state.moto_pid, live["moto"])
    if moto_ok and (moto_identity(state.endpoint) or {}).get("stack_id") != state.stack_id:
        moto_ok, moto_note = False, f"runs but does not answer on {state.endpoint} within {HEALTH_TIMEOUT:.0f} s"
    fh_ok, fh_note = _process_status("firehose", state.firehose_pid, live["firehose"])
    notes = [f"{role}: {text}" for role, text in (("moto", moto_note), ("firehose", fh_note)) if text]
    if state.lost:
        notes.append(state.lost)
    return {
        "up": moto_ok and fh_ok,
        "endpoint": state.endpoint,
        "stack_id": state.stack_id,
        "moto": {"pid": state.moto_pid, "running": moto_ok, "note": moto_note},
        "firehose": {"pid": state.firehose_pid, "running": fh_ok, "note": fh_note},
        "notes": notes,
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


@contextlib.contextmanager
def lifecycle_lock(state_dir: Path):
    """One `up` / `down` at a time per state folder (else two could start, or orphan, processes)."""
    with contextlib.ExitStack() as held:
        try:
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            held.enter_context(procs.file_lock(
                Path(state_dir) / "stack.lock", LOCK_TIMEOUT,
                f"another `kinesis-lab up` or `down` holds {state_dir} (waited {LOCK_TIMEOUT:.0f} s): try again"))
        except TimeoutError as exc:
            raise StackError(str(exc)) from None
        except OSError as exc:
            raise StackError(f"cannot write to the state folder {state_dir} ({exc.strerror or exc}): "
                             "make it writable or set LAB_STATE_DIR to another folder") from None
        yield


def _start_moto(state_dir: Path, port: int, region: str, timeout: float) -> tuple[int, str]:
    """Start moto on ``port``; returns (pid, stack id) once it answers."""
    endpoint = f"http://{HOST}:{port}"
    stack_id = secrets.token_hex(8)
    env = {**os.environ, **local_env(endpoint, region), "PYTHONUNBUFFERED": "1"}
    log = log_dir(state_dir) / "moto.log"
    moto = _spawn([sys.executable, "-m", MOTO_MODULE, "--host", HOST, "--port", str(port),
                   f"--state-dir={state_dir}", f"--stack-id={stack_id}"], log, env)
    deadline = time.monotonic() + timeout
    while (moto_identity(endpoint, timeout=1.0, attempts=1) or {}).get("stack_id") != stack_id:
        if moto.poll() is not None:
            raise StackError(f"moto server exited at start (code {moto.returncode}); see {log}")
        if time.monotonic() > deadline:
            procs.stop([(moto.pid, moto_signature(state_dir), None)])
            raise StackError(f"moto server did not answer on {endpoint} within {timeout:.0f} s; see {log}")
        time.sleep(0.1)
    return moto.pid, stack_id


def _start_firehose(state_dir: Path, endpoint: str, region: str, env: dict[str, str] | None = None) -> int:
    env = {**os.environ, **local_env(endpoint, region), "PYTHONUNBUFFERED": "1", **(env or {})}
    log = log_dir(state_dir) / "firehose.log"
    worker = _spawn([sys.executable, "-m", FIREHOSE_MODULE, f"--state-dir={state_dir / 'firehose'}"], log, env)
    time.sleep(0.3)
    if worker.poll() is not None:
        raise StackError(f"local Firehose service exited at start (code {worker.returncode}); see {log}")
    return worker.pid


def _option(argv, name: str) -> str | None:
    """The value of ``--name VALUE`` / ``--name=VALUE`` in an argv list."""
    if not isinstance(argv, list):
        return None
    for i, arg in enumerate(argv):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def up(state_dir: Path, region: str, port: int | None = None, timeout: float = 30.0) -> tuple[StackState, tuple[str, ...]]:
    """Start what does not run: moto and/or the local Firehose service. Returns (state, what was
    started now: a tuple of "moto", "firehose", empty if all ran already).

    A live moto is never restarted (its AWS state is the learner's work); a dead Firehose worker is
    started again alone and resumes from its checkpoints; a lab process of this state folder that is
    not recorded (started by hand) is adopted. A moto that died is replaced and ``state.lost`` says
    what was lost. Raises StackError if moto runs but does not answer."""
    state_dir = Path(state_dir).resolve()
    with lifecycle_lock(state_dir):
        return _up_locked(state_dir, region, port, timeout)


def _up_locked(state_dir: Path, region: str, port: int | None, timeout: float) -> tuple[StackState, tuple[str, ...]]:
    old = read_state(state_dir)
    live = _lab_processes(state_dir, old)
    started: list[str] = []
    lost = old.lost if old else None
    if live["moto"]:
        moto_pid, moto_started = live["moto"][0]
        if old and moto_pid == old.moto_pid:
            moto_port = old.port
        else:
            moto_port = int(_option(procs.command_line(moto_pid), "--port") or 0)
        endpoint = f"http://{HOST}:{moto_port}"
        identity = moto_identity(endpoint)
        if identity is None:
            raise StackError(
                f"moto (pid {moto_pid}) runs but does not answer on {endpoint} within {HEALTH_TIMEOUT:.0f} s "
                f"(twice); it was left running: try again in a minute, see {log_dir(state_dir) / 'moto.log'}; "
                "`kinesis-lab down` stops it (its AWS state is then lost)")
        stack_id = identity["stack_id"]
    else:
        if port is not None and port_in_use(port):
            raise StackError(
                f"port {port} on {HOST} is already in use: pick another with --port N, or omit --port to use a free one"
            )
        if port is None and old and not port_in_use(old.port):
            port = old.port  # kernels holding the old endpoint reach the new server
        moto_port = port or free_port()
        moto_pid, stack_id = _start_moto(state_dir, moto_port, region, timeout)
        moto_started = procs.start_time(moto_pid)
        started.append("moto")
        if old and old.stack_id:
            lost = f"{STATE_LOST} (moto had stopped; a new, empty one started at {time.strftime('%Y-%m-%d %H:%M')})"
        else:
            lost = None
        endpoint = f"http://{HOST}:{moto_port}"
        # workers of a moto that died would deliver to nothing: start a fresh one
        procs.stop([(pid, firehose_signature(state_dir), st) for pid, st in live["firehose"]])
        live["firehose"] = []
    if live["firehose"]:
        fh_pid, fh_started = live["firehose"][0]
    else:
        try:
            fh_pid = _start_firehose(state_dir, endpoint, region)
        except StackError:
            if "moto" in started:
                procs.stop([(moto_pid, moto_signature(state_dir), moto_started)])
            raise
        fh_started = procs.start_time(fh_pid)
        started.append("firehose")
    state = StackState(port=moto_port, moto_pid=moto_pid, firehose_pid=fh_pid, region=region, stack_id=stack_id,
                       moto_started=moto_started, firehose_started=fh_started, lost=lost)
    if state != old:
        _write_state(state_dir, state)
    return state, tuple(started)


def restart_firehose(state_dir: Path, region: str, env: dict[str, str] | None = None) -> StackState:
    """Stop the lab's Firehose worker(s) of this state folder and start one against the running moto
    (it resumes from its checkpoints). ``env`` goes over the stack's environment: e.g. the access keys of an
    IAM user named ``firehose.amazonaws.com``, which stands in for the Firehose service while IAM enforcement
    is on (the stack's dummy keys are refused then)."""
    state_dir = Path(state_dir).resolve()
    with lifecycle_lock(state_dir):
        state = read_state(state_dir)
        live = _lab_processes(state_dir, state)
        if state is None or not live["moto"] or live["moto"][0][0] != state.moto_pid:
            raise StackError("the local stack is not running: start it with `kinesis-lab up`")
        procs.stop([(pid, firehose_signature(state_dir), st) for pid, st in live["firehose"]])
        state.firehose_pid = _start_firehose(state_dir, state.endpoint, state.region, env)
        state.firehose_started = procs.start_time(state.firehose_pid)
        _write_state(state_dir, state)
        return state


def down(state_dir: Path) -> list[int]:
    """Stop the lab's processes of this state folder: the recorded ones that pass the check and any
    other found by its command line (the state file may be missing or stale). Pids that fail the check
    are never signalled. Returns the pids that were stopped."""
    state_dir = Path(state_dir).resolve()
    if not state_dir.is_dir():  # deleted under running processes: nothing to lock, still find them
        return _down_locked(state_dir)
    with lifecycle_lock(state_dir):
        return _down_locked(state_dir)


def _down_locked(state_dir: Path) -> list[int]:
    live = _lab_processes(state_dir, read_state(state_dir))
    stopped = procs.stop([(pid, firehose_signature(state_dir), st) for pid, st in live["firehose"]])  # the reader first
    stopped += procs.stop([(pid, moto_signature(state_dir), st) for pid, st in live["moto"]])
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
