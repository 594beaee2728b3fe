"""Which processes are the lab's. Nothing is ever signalled on a pid alone: pids outlive the lab (a
state file survives a reboot, pids are reused), so before every signal the process's command line
must name the lab's program and the lab's folder (``Signature``) and, where recorded, its start time
must match. Linux reads ``/proc``; other platforms ask ``ps``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

PROC = Path("/proc")


def _has_proc() -> bool:
    return (PROC / "self" / "cmdline").exists()


def _ps(*args: str) -> str:
    try:
        return subprocess.run(["ps", *args], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (dead, not yet reaped by its parent)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        pass
    try:  # no /proc: a child of ours that exited, without reaping it (its parent's wait() still works)
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except (ChildProcessError, OSError, AttributeError):
        return True


def start_time(pid: int) -> str | None:
    """When the process started, as the platform tells it (Linux: field 22 of /proc/<pid>/stat, in
    clock ticks since boot; elsewhere ``ps -o lstart=``); None if unknown. Differs for a reused pid."""
    if _has_proc():
        try:
            return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[-1].split()[19]
        except (OSError, IndexError):
            return None
    return _ps("-o", "lstart=", "-p", str(pid)).strip() or None


def command_line(pid: int) -> list[str] | str | None:
    """argv (Linux), or the command as one string (``ps``, arguments joined by spaces); None if gone."""
    if _has_proc():
        try:
            raw = (PROC / str(pid) / "cmdline").read_bytes()
        except OSError:
            return None
        return raw.decode(errors="replace").split("\0")[:-1] if raw else None
    return _ps("-ww", "-o", "command=", "-p", str(pid)).strip() or None


def _cwd(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        return os.readlink(PROC / str(pid) / "cwd")
    return None


@dataclass(frozen=True)
class Signature:
    """What a lab process has on its command line: ``program`` (a module run with ``-m``, or a Java
    class) as one argument, and ``option`` naming ``folder`` (``--opt=FOLDER`` or ``--opt FOLDER``;
    a relative folder is resolved against the process's working folder where the platform tells it)."""

    program: str
    option: str
    folder: str  # absolute

    @classmethod
    def of(cls, program: str, option: str, folder: str | Path) -> Signature:
        return cls(program, option, os.path.realpath(folder))

    def _same_folder(self, value: str, cwd: str | None) -> bool:
        if not os.path.isabs(value):
            if cwd is None:
                return False
            value = os.path.join(cwd, value)
        return os.path.realpath(value) == self.folder

    def matches(self, argv: list[str] | str | None, cwd: str | None = None) -> bool:
        if not argv:
            return False
        if isinstance(argv, str):  # from ps: whole words only, absolute folders only
            text = f" {argv} "
            return f" {self.program} " in text and any(
                f" {self.option}{sep}{self.folder} " in text for sep in ("=", " ")
            )
        if self.program not in argv:
            return False
        for i, arg in enumerate(argv):
            if arg.startswith(self.option + "=") and self._same_folder(arg[len(self.option) + 1 :], cwd):
                return True
            if arg == self.option and i + 1 < len(argv) and self._same_folder(argv[i + 1], cwd):
                return True
        return False


def is_ours(pid: int, signature: Signature, started: str | None = None) -> bool:
    """``pid`` runs now, carries ``signature``, and (if ``started`` was recorded) started then."""
    argv = command_line(pid)
    if not argv or not alive(pid):
        return False
    cwd = _cwd(pid) if isinstance(argv, list) and signature.program in argv else None
    if not signature.matches(argv, cwd):
        return False
    return started is None or start_time(pid) in (None, started)


def find(signature: Signature) -> list[int]:
    """This user's running processes that carry ``signature``."""
    found = []
    if _has_proc():
        for entry in PROC.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat().st_uid != os.getuid():
                    continue
            except OSError:
                continue
            if is_ours(int(entry.name), signature):
                found.append(int(entry.name))
        return sorted(found)
    for line in _ps("-ww", "-U", str(os.getuid()), "-o", "pid=,command=").splitlines():
        pid, _, command = line.strip().partition(" ")
        if pid.isdigit() and signature.matches(command.strip()) and alive(int(pid)):
            found.append(int(pid))
    return sorted(found)


def send(pid: int, signature: Signature, signum: int, started: str | None = None) -> bool:
    """Send ``signum`` only if ``pid`` is provably the lab's (see is_ours). True if sent. On Linux the
    process is pinned first (pidfd), so a pid reused between the check and the signal is not hit."""
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        except OSError:
            pidfd = None
    try:
        if not is_ours(pid, signature, started):
            return False
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signum)
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            return False
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def stop(targets: Iterable[tuple[int, Signature, str | None]], grace: float = 5.0, kill_wait: float = 10.0) -> list[int]:
    """SIGTERM each (pid, signature, start time) that is provably the lab's, SIGKILL (checked again)
    what is left after ``grace`` s. Returns the pids that were signalled and are gone."""
    targets = list(targets)
    signalled = [t for t in targets if send(t[0], t[1], signal.SIGTERM, t[2])]
    pending = list(signalled)
    for wait, then in ((grace, signal.SIGKILL), (kill_wait, None)):
        deadline = time.monotonic() + wait
        while pending and time.monotonic() < deadline:
            pending = [t for t in pending if alive(t[0])]
            if pending:
                time.sleep(0.05)
        if not pending or then is None:
            break
        for pid, signature, started in pending:
            send(pid, signature, then, started)
    return [t[0] for t in signalled if t not in pending]


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes in LISTEN state on ``port`` (IPv4 and IPv6), from /proc/net/tcp{,6}."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def listens_on(pid: int, port: int) -> bool | None:
    """Does ``pid`` hold a listening socket on ``port``? None where the platform cannot tell (no /proc)."""
    if not _has_proc():
        return None
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not wanted:
        return False
    with contextlib.suppress(OSError):
        for fd in (PROC / str(pid) / "fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in wanted:
                    return True
    return False


@contextlib.contextmanager
def file_lock(path: Path, timeout: float, busy_message: str):
    """An exclusive lock on ``path`` (created if missing), waited for up to ``timeout`` s; TimeoutError
    with ``busy_message`` after that. No-op where fcntl is missing (Windows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is None:
            yield
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(busy_message) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
