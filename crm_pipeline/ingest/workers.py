"""Decode pulled lines into encoded customer records in worker processes.

Parsing a customer line, converting its GraphQL shape, mapping it (E.164 validation included)
and encoding its COPY rows is pure Python: in the loading process it holds the interpreter lock
that the merge thread needs back after every database round trip. A bulk pull's lines are
instead sent in batches to a worker process, which returns each record with its encoding done
(`EncodedSource`) and its raw record as JSON bytes, decoded again only if a record is
quarantined or folded. Batches keep their order and at most `in_flight` of them are
outstanding, so memory stays bounded on a 1M-customer file.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice

import orjson

from crm_pipeline.ingest.encoding import EncodedSource, address_dict, encode_source
from crm_pipeline.mapping.records import CustomerRecord, canonical_json
from crm_pipeline.process_pool import spawn_pool

Decode = Callable[[bytes], CustomerRecord | None]

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


class DecodeFailed(RuntimeError):
    """A line a worker could not decode (line number and the error), or a worker that died."""


def worker_count() -> int:
    """Worker processes: one per core, up to 4. On 2 cores two workers beat one (the loading
    process mostly waits on PostgreSQL); see docs/loading.md."""
    return max(0, min(4, os.cpu_count() or 1))


def decode_in_workers(
    lines: Iterable[bytes], decode: Decode, *, batch_size: int = 1000, in_flight: int = 4
) -> Iterator[CustomerRecord]:
    """`decode(line)` for every line (None skips it), run in worker processes, in order.

    `decode` must be a module-level function (it is pickled by name). With a single core the
    lines are decoded here instead, with the same result.
    """
    pool = _shared_pool() if worker_count() > 1 else None
    if pool is None:
        for line in lines:
            record = decode(line)
            if record is not None:
                yield record
        return
    # start the workers and their imports now: pulling the first line may wait for Shopify to
    # finish the bulk operation, time in which the workers boot
    for _ in range(worker_count()):
        pool.submit(importlib.import_module, decode.__module__)
    pending: deque[Future] = deque()
    it = iter(lines)
    first_line = 1
    try:
        while batch := list(islice(it, batch_size)):
            pending.append(pool.submit(_decode_batch, decode, batch, first_line))
            first_line += len(batch)
            if len(pending) >= in_flight:
                yield from _rebuilt(_result(pending.popleft()))
        while pending:
            yield from _rebuilt(_result(pending.popleft()))
    except BrokenProcessPool as exc:  # submitting to a pool a worker death already broke
        _discard_pool()
        raise DecodeFailed(f"a decoding worker process died: {exc}") from exc
    finally:
        for future in pending:  # the consumer stopped early: drop what is still queued
            future.cancel()


def worker_pids() -> list[int]:
    """The decoding workers' process ids (none before the first parallel decode)."""
    pool = _pool
    processes = getattr(pool, "_processes", None) or {}
    return list(processes)


def _result(future: Future) -> list[tuple]:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        _discard_pool()
        raise DecodeFailed(f"a decoding worker process died: {exc}") from exc


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


def _decode_batch(decode: Decode, lines: list[bytes], first_line: int) -> list[tuple]:
    """Runs in the worker: decode, map and encode each line; compact tuples back."""
    out = []
    for n, line in enumerate(lines, start=first_line):
        try:
            record = decode(line)
            if record is None:
                continue
            raw_json = canonical_json(record.raw)
            enc = encode_source(record, raw_json)
        except Exception as exc:  # noqa: BLE001 (any decoding error, re-raised in the loader)
            raise DecodeFailed(f"line {n} of the pulled data: {exc!r}") from None
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


def _rebuilt(rows: list[tuple]) -> Iterator[CustomerRecord]:
    """CustomerRecords with what the loader reads; the rest lives in their encoding."""
    for (
        source,
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
    ) in rows:
        yield CustomerRecord(
            source=source,
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
