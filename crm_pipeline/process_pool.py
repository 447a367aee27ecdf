"""Process pools for CPU-bound Python that would otherwise hold the interpreter lock.

Spawned, not forked: the processes that start them run threads (Dagster's, the sandbox's
HTTP server), which `fork` would copy mid-state. Each worker exits when its parent is gone: a
parent killed outright (SIGTERM without cleanup, SIGKILL) would otherwise leave its workers
waiting on their task queue forever. And a process that ends while a pool is still open (a
Dagster step worker of the multiprocess executor, which keeps the shared decoding pool) stops
its workers on the way out instead of waiting on them forever.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # its exit handler joins children: ours must be registered after it
import os
import threading
import time
import weakref
from concurrent.futures import ProcessPoolExecutor

_PARENT_POLL_SECONDS = 1.0


_open_pools: weakref.WeakSet[ProcessPoolExecutor] = weakref.WeakSet()


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    )
    _open_pools.add(pool)
    if not _open_pools_finalized.get(os.getpid()):
        # a process started by multiprocessing (a Dagster step worker) joins its children in
        # its bootstrap, before atexit; finalizers with an exit priority run before that join
        multiprocessing.util.Finalize(None, _stop_pools, exitpriority=10)
        _open_pools_finalized[os.getpid()] = True
    return pool


_open_pools_finalized: dict[int, bool] = {}


@atexit.register
def _stop_pools() -> None:
    """On the way out, before multiprocessing joins its children: end every pool's workers."""
    for pool in list(_open_pools):
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(5)


def _exit_with_parent(parent: int) -> None:
    """Runs in each worker: a daemon thread that ends the worker once `parent` is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
