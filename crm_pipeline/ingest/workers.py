"""Decode pulled customers into encoded customer records in worker processes.

Parsing a customer line, converting its GraphQL shape, mapping it (E.164 validation included)
and encoding its COPY rows is pure Python: in the loading process it holds the interpreter lock
that the merge thread needs back after every database round trip. A bulk pull's lines (or a
client's parsed Klaviyo profiles, or the lines and rows of an imported file) are instead sent in
batches to a worker process, which returns each record with its encoding done
(`EncodedSource`) and its raw record as JSON bytes, decoded again only if a record is
quarantined or folded. Batches keep their order and at most `in_flight` of them are
outstanding, so memory stays bounded on a 1M-customer file. A bad line, or one that kills its
worker, becomes a quarantine row (ingest/bad_records.py) and the pull goes on.

Only customers travel this way: they come back as compact tuples of bytes. Orders and events
map in a few microseconds each, less than pickling them to a worker and back costs
(docs/loading.md has the figures).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from itertools import islice
from typing import Any

import orjson

from crm_pipeline.ingest.bad_records import (
    WORKER_DIED,
    Unreadable,
    json_problem,
    line_problem,
    line_record,
    mapped,
    storable,
    unmappable,
    unreadable_value,
    value_problem,
)
from crm_pipeline.ingest.encoding import EncodedSource, address_dict, encode_source
from crm_pipeline.mapping.records import CustomerRecord, canonical_json
from crm_pipeline.process_pool import spawn_pool

log = logging.getLogger(__name__)

# a line (or another picklable item) -> its record, an Unreadable, or None to skip it
Decode = Callable[[Any], CustomerRecord | Unreadable | None]
Batch = tuple[list[Any], int]  # items and the number of the first

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def worker_count() -> int:
    """Worker processes: one per core, up to 4. On 2 cores two workers beat one (the loading
    process mostly waits on PostgreSQL); see docs/loading.md."""
    return max(0, min(4, os.cpu_count() or 1))


def map_in_workers(
    items: Iterable[Any], map_one: Callable[[Any], CustomerRecord], source: str
) -> Iterator[CustomerRecord | Unreadable]:
    """`bad_records.mapped(items, map_one, source)` (e.g. a client's Klaviyo profiles), mapped
    and encoded in the worker processes: the same records, Unreadables where `mapped` makes
    them. `map_one` must be module-level."""
    return decode_in_workers(items, partial(mapped_one, map_one, source), source=source)


def mapped_one(map_one: Callable[[Any], Any], source: str | None, item: Any) -> Any:
    """`mapped` of one item (in a worker)."""
    return next(mapped([item], map_one, source))


def decode_in_workers(
    lines: Iterable[Any],
    decode: Decode,
    *,
    source: str | None = None,
    batch_size: int = 1000,
    in_flight: int = 4,
) -> Iterator[CustomerRecord | Unreadable]:
    """`decode(line)` for every line (None skips it), run in worker processes, in order.

    A line that does not decode, or holds what PostgreSQL refuses, comes out as an `Unreadable`
    of `source` (the loader quarantines it). When a worker dies, the batches it took down are
    decoded again one line per task, so only the line that kills a worker is set aside.
    `decode` must be a module-level function or a `functools.partial` of one (it is pickled by
    name); the lines may be any picklable items it takes. With a single core the lines are
    decoded here instead, with the same result.
    """
    pool = _shared_pool() if worker_count() > 1 else None
    if pool is None:
        for batch in _batches(lines, batch_size):
            yield from _rebuilt(_decode_batch(decode, *batch), source)
        return
    # start the workers and their imports now: pulling the first line may wait for Shopify to
    # finish the bulk operation, time in which the workers boot
    for _ in range(worker_count()):
        pool.submit(importlib.import_module, getattr(decode, "func", decode).__module__)
    pending: deque[tuple[Future | None, Batch]] = deque()
    try:
        for batch in _batches(lines, batch_size):
            pending.append((_submit(decode, batch), batch))
            if len(pending) >= in_flight:
                yield from _next_records(pending, decode, source)
        while pending:
            yield from _next_records(pending, decode, source)
    finally:
        for future, _ in pending:  # the consumer stopped early: drop what is still queued
            if future is not None:
                future.cancel()


def worker_pids() -> list[int]:
    """The decoding workers' process ids (none before the first parallel decode)."""
    pool = _pool
    processes = getattr(pool, "_processes", None) or {}
    return list(processes)


def _batches(lines: Iterable[Any], size: int) -> Iterator[Batch]:
    it = iter(lines)
    first = 1
    while batch := list(islice(it, size)):
        yield batch, first
        first += len(batch)


def _submit(decode: Decode, batch: Batch) -> Future | None:
    """The batch's future; None when the pool is already broken (its batch is redone)."""
    try:
        return _shared_pool().submit(_decode_batch, decode, *batch)
    except BrokenProcessPool:
        return None


def _next_records(
    pending: deque[tuple[Future | None, Batch]], decode: Decode, source: str | None
) -> Iterator[CustomerRecord | Unreadable]:
    """The oldest batch's records; after a worker death, every outstanding batch, isolated."""
    future, batch = pending.popleft()
    try:
        if future is None:
            raise BrokenProcessPool("the pool was broken when the batch was submitted")
        rows = future.result()
    except BrokenProcessPool:
        _discard_pool()
        redo = [batch, *(b for _, b in pending)]
        pending.clear()
        log.warning(
            "a decoding worker died; decoding lines %d-%d one by one",
            redo[0][1],
            redo[-1][1] + len(redo[-1][0]) - 1,
        )
        for lines, first in redo:
            yield from _rebuilt(_isolated(decode, lines, first), source)
        return
    yield from _rebuilt(rows, source)


def _isolated(decode: Decode, lines: list[Any], first_line: int) -> list[tuple]:
    """Decode each line as its own task in a fresh one-worker pool: a line whose worker dies
    becomes an Unreadable row, and a new worker takes the next line."""
    rows: list[tuple] = []
    pool = spawn_pool(1)
    try:
        for n, line in enumerate(lines, start=first_line):
            try:
                rows.extend(pool.submit(_decode_batch, decode, [line], n).result())
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
                pool = spawn_pool(1)
                rows.append(_unreadable_row(line, n, WORKER_DIED))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return rows


def _shared_pool() -> ProcessPoolExecutor:
    """One pool per process, started on first use and kept for later loads."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = spawn_pool(worker_count())
        return _pool


def _discard_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


def _unreadable_row(item: Any, number: int, reason: str) -> tuple:
    """An input that does not load, as (external_id, jsonb-safe record, reasons): a line (or a
    (line, number) pair of a file) as its bytes, anything else as `unreadable_value` keeps it."""
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], bytes):
        item, number = item
    if isinstance(item, bytes):
        return (None, line_record(item, number), [reason])
    if isinstance(item, Unreadable):
        return (item.external_id, item.record, item.reasons)
    unreadable = unreadable_value(item, [reason], None)
    return (unreadable.external_id, unreadable.record, unreadable.reasons)


def _decode_batch(decode: Decode, lines: list[Any], first_line: int) -> list[tuple]:
    """Runs in the worker: decode, map and encode each line; compact tuples back. A line that
    cannot load comes back as an `_unreadable_row` instead."""
    out: list[tuple] = []
    for n, line in enumerate(lines, start=first_line):
        record = None
        try:
            record = decode(line)
            if record is None:
                continue
            if isinstance(record, Unreadable):
                out.append((record.external_id, record.record, record.reasons))
                continue
            raw_json = canonical_json(record.raw)
            problem = json_problem(raw_json)
            if problem is not None:
                out.append((record.external_id, storable(record.raw), [problem]))
                continue
            enc = encode_source(record, raw_json)
        except Exception as exc:  # noqa: BLE001 (one line's problem, not the pull's)
            if isinstance(line, bytes):
                out.append(_unreadable_row(line, n, line_problem(line) or unmappable(exc)))
            elif record is None or isinstance(record, Unreadable):  # the mapping raised
                out.append(_unreadable_row(line, n, unmappable(exc)))
            else:  # a mapped record PostgreSQL would refuse: what the loader's screen says
                reason = value_problem(record.raw) or unmappable(exc)
                out.append((record.external_id, storable(record.raw), [reason]))
            continue
        out.append(
            (
                record.source,
                record.external_id,
                record.source_updated_at,
                record.created_at,
                record.email,
                record.raw_email,
                record.phone,
                record.phone_normalized,
                record.link_shopify_id,
                raw_json,
                enc.digest,
                enc.source_tail,
                enc.address_tails,
                enc.customer_tail,
                orjson.dumps([address_dict(a) for a in record.addresses]),
            )
        )
    return out


def _rebuilt(rows: list[tuple], source: str | None) -> Iterator[CustomerRecord | Unreadable]:
    """CustomerRecords with what the loader reads (the rest lives in their encoding), and the
    Unreadables of `source` for the lines that cannot load."""
    for row in rows:
        if len(row) == 3:
            yield Unreadable(source, *row)
            continue
        (
            record_source,
            external_id,
            updated_at,
            created_at,
            email,
            raw_email,
            phone,
            phone_normalized,
            link_shopify_id,
            raw_json,
            digest,
            source_tail,
            address_tails,
            customer_tail,
            addresses_json,
        ) = row
        yield CustomerRecord(
            source=record_source,
            external_id=external_id,
            source_updated_at=updated_at,
            email=email,
            phone=phone,
            phone_normalized=phone_normalized,
            created_at=created_at,
            link_shopify_id=link_shopify_id,
            raw=None,
            raw_json=raw_json,
            raw_email=raw_email,
            encoded=EncodedSource(
                digest, source_tail, address_tails, customer_tail, addresses_json
            ),
        )
