"""Preparing the producer's next entries while a PutRecords call waits for its answer.

Turning CSV lines into PutRecords entries costs CPU (parsing, JSON, the event id: ~7 µs a record); a
call is mostly waiting for Kinesis. ``read_ahead`` does the preparing in a background thread during
that wait, so the producer keeps close to a bare ``put_records`` loop over pre-built calls
(``benchmarks/run.py``, benchmark 7).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

CHUNK = 50  # items handed over at once ...
CHUNK_SIZE = 256 * 1024  # ... or fewer once their sizes add up to this (wide rows: ~1 record a chunk)
CHUNKS = 20  # chunks queued at most: at most CHUNK x CHUNKS items, about CHUNKS x CHUNK_SIZE bytes, ahead
THREAD_NAME = "producer-read-ahead"


def read_ahead(items: Iterator[T], prepare: Callable[[T], R], allowed: threading.Event,
               size: Callable[[R], int] = lambda _: 0) -> Iterator[R]:
    """``prepare(item)`` for each of ``items``, in order, done by a background thread; ``size``: what a
    prepared item weighs (bytes), so that wide items are held ahead in bounded memory too.

    The thread works while ``allowed`` is set (the caller sets it while it waits for I/O; this
    generator sets it while the caller waits for items), so the two do not take turns at Python's lock
    while the caller is busy. An error raised by ``items`` or ``prepare`` comes out where it happened,
    after the items before it. Closing the generator (or leaving a loop over it) stops the thread."""
    chunks: queue.Queue = queue.Queue(maxsize=CHUNKS)
    stop, end = threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        chunk: list[R] = []
        weight = 0
        try:
            for item in items:
                if not chunk:
                    while not allowed.wait(0.1):
                        if stop.is_set():
                            return
                prepared = prepare(item)
                chunk.append(prepared)
                weight += size(prepared)
                if len(chunk) == CHUNK or weight >= CHUNK_SIZE:
                    if not put(chunk):
                        return
                    chunk, weight = [], 0
                    time.sleep(0)  # hand Python's lock over now: the caller may be waiting for it
        except BaseException as exc:  # handed over after what was prepared before it
            if not chunk or put(chunk):
                put(exc)
            return
        if not chunk or put(chunk):
            put(end)

    worker = threading.Thread(target=work, name=THREAD_NAME, daemon=True)
    worker.start()
    try:
        while True:
            try:
                got = chunks.get_nowait()
            except queue.Empty:
                allowed.set()  # the caller waits for items: the thread may work
                got = chunks.get()
            if got is end:
                return
            if isinstance(got, BaseException):
                raise got
            yield from got
    finally:
        stop.set()
        worker.join(timeout=5)
