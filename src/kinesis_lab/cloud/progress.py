"""A progress bar that leaves its final state in a saved notebook.

tqdm.auto's widget saves its first text (``0%|  | 0/540``) in an executed notebook's stored output.
Here, in a Jupyter kernel the bar is a text line shown with ``IPython.display.display(...,
display_id=True)`` and replaced in place (at most every ``min_interval`` seconds, and always on close).
Jupyter, nbclient and papermill apply those updates to the stored output, so a saved notebook shows
the last state, e.g. ``event ids in S3: 100%|██████████| 540/540 [00:05<00:00, 108.00rec/s]``.
Elsewhere (a terminal) it is a plain tqdm bar; ``disable=True`` shows nothing.

    with progress_bar(len(ids), "event ids in S3", unit="rec") as bar:
        wait_for_landing(..., on_progress=bar.set)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tqdm import tqdm

MIN_INTERVAL_SECONDS = 0.5


def in_jupyter_kernel() -> bool:
    """True inside a Jupyter kernel (a notebook, papermill, nbclient); False in a terminal or IPython shell."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class _TextLine:
    """One display_data output, updated in place (its display id)."""

    def __init__(self):
        self._handle = None

    def show(self, text: str) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display({"text/plain": text}, raw=True, display_id=True)
        else:
            self._handle.update({"text/plain": text}, raw=True)


class Progress:
    """Counts up to ``total``; ``set(n)`` (absolute) or ``update(k)`` (relative), then ``close()``.

    ``mode``: "notebook" (a display line updated in place), "terminal" (tqdm), "off" (nothing), or None to
    pick "notebook" in a Jupyter kernel and "terminal" elsewhere. ``sink`` (notebook mode) is what shows
    the text; by default an IPython display. ``clock`` is for tests."""

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        *,
        unit: str = "it",
        disable: bool = False,
        mode: str | None = None,
        min_interval: float = MIN_INTERVAL_SECONDS,
        sink: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self.closed = False
        self.min_interval = min_interval
        self._clock = clock
        self._started = clock()
        self._shown_at = self._started
        self._shown_text: str | None = None
        self._tqdm = None
        self.mode = "off" if disable else (mode or ("notebook" if in_jupyter_kernel() else "terminal"))
        if self.mode == "notebook":
            if sink is None:  # the first text creates the display; later ones replace it
                sink = _TextLine().show
            self._sink = sink
            self._show()
        elif self.mode == "terminal":
            self._tqdm = tqdm(total=total, desc=desc, unit=unit, mininterval=min_interval)
        elif self.mode != "off":
            raise ValueError(f"mode must be 'notebook', 'terminal', 'off' or None, not {mode!r}")

    def text(self) -> str:
        """The bar as one line of text (tqdm's format)."""
        return tqdm.format_meter(self.n, self.total, self._clock() - self._started, prefix=self.desc,
                                 unit=self.unit)

    def _show(self) -> None:
        text = self.text()
        if text != self._shown_text:
            self._sink(text)
            self._shown_text = text
        self._shown_at = self._clock()

    def set(self, n: int) -> None:
        """Move the bar to ``n`` (a count so far: suits ``on_progress`` callbacks)."""
        if self.closed:
            return
        if self._tqdm is not None:
            self._tqdm.update(n - self._tqdm.n)
        self.n = n
        if self.mode == "notebook" and self._clock() - self._shown_at >= self.min_interval:
            self._show()

    def update(self, k: int = 1) -> None:
        self.set(self.n + k)

    def close(self) -> None:
        """Show the final state (always, whatever the throttle) and stop."""
        if self.closed:
            return
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.mode == "notebook":
            self._show()
        self.closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int | None, desc: str = "", *, unit: str = "it", disable: bool = False,
                 **kwargs) -> Progress:
    """A ``Progress`` for the current environment (see the module docstring); use it as a context manager."""
    return Progress(total, desc, unit=unit, disable=disable, **kwargs)
