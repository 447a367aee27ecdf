"""Process pools for CPU-bound Python that would otherwise hold the interpreter lock.

Spawned, not forked: the processes that start them run threads (Dagster's, the sandbox's
HTTP server), which `fork` would copy mid-state. Each worker exits when its parent is gone: a
parent killed outright (SIGTERM without cleanup, SIGKILL) would otherwise leave its workers
waiting on their task queue forever.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

_PARENT_POLL_SECONDS = 1.0


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    )


def _exit_with_parent(parent: int) -> None:
    """Runs in each worker: a daemon thread that ends the worker once `parent` is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
