"""Helpers for the worker tests: a worker in a thread, a wait for a Firestore document."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.webhooks.queue import Delivery
from crm_pipeline.worker.loop import Worker, WorkerSettings
from crm_pipeline_tests.webhooks.test_processing_support import FAST


@contextmanager
def running_worker(
    engine: sa.Engine,
    dsn: str,
    client: firestore.Client,
    instance: dg.DagsterInstance | None = None,
    batch_size: int = 50,
    after_each: Callable[[Delivery, str], None] | None = None,
) -> Iterator[Worker]:
    """A Worker running in a thread until the block ends (then stopped and joined)."""
    worker = Worker(
        engine,
        dsn,
        client,
        instance=instance,
        settings=WorkerSettings(batch_size=batch_size, poll_seconds=0.5, policy=FAST),
        after_each=after_each,
    )
    thread = threading.Thread(target=worker.run, name="test-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(60)
        assert not thread.is_alive(), "the worker did not stop"


def wait_for(predicate: Callable[[], Any], seconds: float = 60.0) -> Any:
    """Poll until `predicate()` is truthy and return it; fail after `seconds` (a hang guard)."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def document(client: firestore.Client, path: str) -> dict[str, Any] | None:
    return client.document(path).get().to_dict()
