"""Waiting on background work in tests: poll a condition with a generous deadline, never a fixed sleep.

A loaded machine (2 cores shared with other jobs) makes anything slow, so a test waits for the
condition it needs, and only gives up after ``DEADLINE`` seconds, saying what it waited for. How fast
things happen is measured in ``benchmarks/``, not asserted here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

DEADLINE = 120.0  # seconds: background work that takes longer than this is broken, not slow

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float = DEADLINE, poll: float = 0.1,
               detail: Callable[[], str] | None = None) -> T:
    """Poll ``condition`` until it returns something truthy and return that; after ``timeout`` s fail
    saying what was awaited (and ``detail()``, e.g. what was seen instead)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            extra = f": {detail()}" if detail is not None else ""
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(poll)


class LogWatch:
    """The lines a log file gets from now on (a service's log shared by several tests)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                return fh.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def wait_for(self, *parts: str, what: str | None = None, timeout: float = DEADLINE) -> str:
        """The first new line holding every one of ``parts``."""

        def found() -> str | None:
            return next((line for line in self.lines() if all(p in line for p in parts)), None)

        return wait_until(found, what or f"a line with {' … '.join(parts)} in {self.path}", timeout,
                          detail=lambda: "last lines: " + " | ".join(self.lines()[-5:]))
