"""Map pulled records in worker processes: Klaviyo profiles and events, Shopify orders, files.

`bad_records.mapped` runs a source's mapping (timestamps, decimals, E.164 phones, the shape
conversion) in the loading process, where it holds the interpreter lock the merge thread needs
back after every database round trip. `map_in_workers` runs that same `mapped` on batches of the
pulled items in the decoding workers (ingest/workers.py's pool) and hands the records back in
order; a customer record also comes back with its COPY encoding done (ingest/encoding.py), as the
Shopify customer lines do. The records are the ones `mapped` makes in process, so the loaders see
no difference (crm_pipeline_tests/ingest/test_map_workers.py). Batches keep their order and at
most `in_flight` are outstanding, so memory stays bounded. An item that kills its worker becomes
a quarantine row (WORKER_DIED) and the pull goes on.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from itertools import islice
from typing import Any

from crm_pipeline.ingest.bad_records import WORKER_DIED, Unreadable, mapped, unreadable_value
from crm_pipeline.ingest.encoding import encode_source
from crm_pipeline.ingest.workers import discard_pool, shared_pool, worker_count
from crm_pipeline.mapping.records import CustomerRecord
from crm_pipeline.process_pool import spawn_pool

log = logging.getLogger(__name__)

MapOne = Callable[[Any], Any]
Work = Callable[[list[Any]], list[Any]]  # a batch of items -> their records, in the worker
Died = Callable[[Any], Any]  # the quarantine row of an item that killed its worker


def map_in_workers(
    items: Iterable[Any],
    map_one: MapOne,
    source: str | None,
    *,
    batch_size: int = 500,
    in_flight: int = 4,
) -> Iterator[Any]:
    """`mapped(items, map_one, source)`, computed in worker processes, in order.

    `map_one` must pickle (a module-level function, or a `functools.partial` of one) and so must
    the items (the dicts a client parsed, `Unreadable`s). With a single core the items are mapped
    here instead, with the same result.
    """
    return in_workers(
        items,
        partial(map_batch, map_one, source),
        partial(_died, source),
        batch_size=batch_size,
        in_flight=in_flight,
    )


def map_batch(map_one: MapOne, source: str | None, items: list[Any]) -> list[Any]:
    """Runs in the worker: `mapped` over the batch, each customer record encoded for COPY."""
    return encoded(list(mapped(items, map_one, source)))


def encoded(records: list[Any]) -> list[Any]:
    """`records` with each CustomerRecord's COPY encoding computed (in the worker, once). A
    record that does not encode (a value JSON cannot hold) is left to the loader's screening,
    as in process."""
    for record in records:
        if isinstance(record, CustomerRecord) and record.encoded is None:
            try:
                record.encoded = encode_source(record)
            except Exception:  # noqa: BLE001, S110 (the loader quarantines it with its reason)
                pass
    return records


def in_workers(
    items: Iterable[Any],
    work: Work,
    died: Died,
    *,
    batch_size: int = 500,
    in_flight: int = 4,
) -> Iterator[Any]:
    """`work(batch)` for consecutive batches of `items` in the worker processes, flattened in
    order; `died(item)` stands for an item whose worker died. `work` must pickle."""
    if worker_count() <= 1:
        for batch in _batches(items, batch_size):
            yield from work(batch)
        return
    pending: deque[tuple[Future | None, list[Any]]] = deque()
    try:
        for batch in _batches(items, batch_size):
            pending.append((_submit(work, batch), batch))
            if len(pending) >= in_flight:
                yield from _next_records(pending, work, died)
        while pending:
            yield from _next_records(pending, work, died)
    finally:
        for future, _ in pending:  # the consumer stopped early: drop what is still queued
            if future is not None:
                future.cancel()


def _died(source: str | None, item: Any) -> Any:
    if isinstance(item, Unreadable):
        return item
    return unreadable_value(item, [WORKER_DIED], source)


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _submit(work: Work, batch: list[Any]) -> Future | None:
    """The batch's future; None when the pool is already broken (its batch is redone)."""
    try:
        return shared_pool().submit(work, batch)
    except BrokenProcessPool:
        return None


def _next_records(
    pending: deque[tuple[Future | None, list[Any]]], work: Work, died: Died
) -> Iterator[Any]:
    """The oldest batch's records; after a worker death, every outstanding batch, isolated."""
    future, batch = pending.popleft()
    try:
        if future is None:
            raise BrokenProcessPool("the pool was broken when the batch was submitted")
        records = future.result()
    except BrokenProcessPool:
        discard_pool()
        redo = [item for b in (batch, *(b for _, b in pending)) for item in b]
        pending.clear()
        log.warning("a mapping worker died; mapping %d records one by one", len(redo))
        yield from _isolated(work, died, redo)
        return
    yield from records


def _isolated(work: Work, died: Died, items: list[Any]) -> Iterator[Any]:
    """Each item as its own task in a fresh one-worker pool: an item whose worker dies becomes
    `died(item)`, and a new worker takes the next item."""
    pool = spawn_pool(1)
    try:
        for item in items:
            try:
                yield from pool.submit(work, [item]).result()
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
                pool = spawn_pool(1)
                yield died(item)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
