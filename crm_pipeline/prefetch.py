"""Produce the next item in a background thread while the caller works on the current one.

Pulling, parsing and building batches is Python work; writing them is mostly waiting on
PostgreSQL or Firestore. Overlapping the two uses both cores of a small machine.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()
_SWITCH_INTERVAL_SECONDS = 0.0005


def prefetch(items: Iterable[T], depth: int = 2, name: str = "crm-prefetch") -> Iterator[T]:
    """Iterate `items` with up to `depth` of them produced ahead by a daemon thread.

    An exception raised while producing is re-raised to the consumer at the point it would have
    surfaced; when the consumer stops early the producer is told to stop and unblocked.

    While it runs, the interpreter's thread switch interval is shortened: the consumer mostly
    waits on PostgreSQL or Firestore and, each time an answer arrives, needs the interpreter
    lock back from the CPU-bound producer. At the default 5 ms every round trip of a COPY or a
    batch can stall that long; at 0.5 ms the two overlap (measured in bench/bench_ingest.py).
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, _SWITCH_INTERVAL_SECONDS))
    try:
        yield from _prefetch(items, depth, name)
    finally:
        sys.setswitchinterval(previous)


def _prefetch(items: Iterable[T], depth: int, name: str) -> Iterator[T]:
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                out.put(item)
        except BaseException as exc:  # handed to the consumer, which re-raises
            out.put(exc)
            return
        out.put(_DONE)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                out.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.1)
