"""A mirror run: keyset batches of live customers (or only the touched ones), written only when
their hash changed."""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.firestore.documents import (
    CustomerDocument,
    fetch_customer_batch,
    fetch_customer_documents,
)
from crm_pipeline.firestore.lost import ensure_emulator
from crm_pipeline.firestore.mirror.bookkeeping import (
    _Bookkeeping,
    _load_state,
    _merge_ids,
    _record_upserts,
)
from crm_pipeline.firestore.mirror.deletes import _delete_dead
from crm_pipeline.firestore.mirror.settings import MirrorSettings, MirrorSummary
from crm_pipeline.firestore.mirror.writer import (
    CustomerWrite,
    FailWrite,
    FirestoreWriter,
    Operation,
    customer_upsert,
)
from crm_pipeline.prefetch import prefetch

log = logging.getLogger(__name__)

_FIRST_BATCH = 250


def _batches(engine: sa.Engine, batch_size: int) -> Iterator[list[CustomerDocument]]:
    """Keyset batches of live customers' documents."""
    after: str | None = None
    # Start small and double: the writers get work quickly instead of idling while the first
    # full batch is built.
    limit = min(batch_size, _FIRST_BATCH)
    with engine.connect() as conn:
        while True:
            batch = fetch_customer_batch(conn, after, limit)
            limit = min(batch_size, limit * 2)
            conn.commit()  # end the read transaction: no snapshot held for hours
            if not batch:
                return
            yield batch
            after = batch[-1].customer_id


_DUE_FAILED = sa.text(
    "SELECT customer_id::text FROM firestore_mirror_state "
    "WHERE status = 'failed' AND (next_attempt_at IS NULL OR next_attempt_at <= now())"
)


def _batches_of(
    engine: sa.Engine, ids: Collection[str], batch_size: int
) -> Iterator[list[CustomerDocument]]:
    """Batches of the live customers among `ids` plus those whose last write failed and is due
    again (an incremental run's set: no scan of every live customer)."""
    with engine.connect() as conn:
        due = [str(r[0]) for r in conn.execute(_DUE_FAILED)]
    targets = sorted(set(ids) | set(due))
    for start in range(0, len(targets), batch_size):
        with engine.connect() as conn:
            batch = fetch_customer_documents(conn, targets[start : start + batch_size])
        if batch:
            yield batch


def sync_mirror(
    engine: sa.Engine,
    client: firestore.Client,
    settings: MirrorSettings | None = None,
    fail_write: FailWrite | None = None,
    run_id: str | None = None,
    customer_ids: Collection[str] | None = None,
) -> MirrorSummary:
    """Mirror every live customer whose document changed and delete the documents of the rest.

    With `customer_ids` (an incremental run's touched customers), only those documents are
    built, hashed and written, and only those of them no longer live are deleted.
    """
    ensure_emulator(client)
    settings = settings or MirrorSettings()
    summary = MirrorSummary(run_id=run_id or f"mirror-{uuid.uuid4().hex[:12]}")
    started = time.perf_counter()
    batches_source = (
        _batches(engine, settings.batch_size)
        if customer_ids is None
        else _batches_of(engine, customer_ids, settings.batch_size)
    )
    with (
        FirestoreWriter(
            client, settings.threads, settings.max_attempts, settings.backoff_seconds, fail_write
        ) as writer,
        ThreadPoolExecutor(2, thread_name_prefix="firestore-mirror-batch") as batches,
    ):
        # Two batches in flight: one batch's last requests and bookkeeping overlap the next
        # batch's writes, so the write threads never idle at batch boundaries.
        in_flight: deque[Future[None]] = deque()
        batches_ahead = prefetch(batches_source, depth=1, name="firestore-mirror-fetch")
        for batch in batches_ahead:
            in_flight.append(batches.submit(_sync_batch, engine, writer, batch, settings, summary))
            if len(in_flight) >= 2:
                in_flight.popleft().result()
        while in_flight:
            in_flight.popleft().result()
        _delete_dead(engine, client, writer, settings, summary, customer_ids)
    summary.seconds = time.perf_counter() - started
    log.info(
        "firestore mirror %s: %d considered, %d written, %d unchanged, %d deleted, %d failed "
        "(%.0f docs/s)",
        summary.run_id,
        summary.considered,
        summary.written,
        summary.unchanged,
        summary.deleted,
        summary.failed,
        summary.docs_per_s,
    )
    return summary


def _sync_batch(
    engine: sa.Engine,
    writer: FirestoreWriter,
    batch: Sequence[CustomerDocument],
    settings: MirrorSettings,
    summary: MirrorSummary,
    operation: Operation = "upsert",
    force: bool = False,
    extra_stale: dict[str, dict[str, list[str]]] | None = None,
) -> None:
    total, summary = summary, MirrorSummary(run_id=summary.run_id)
    try:
        _sync_batch_into(engine, writer, batch, settings, summary, operation, force, extra_stale)
    finally:
        total.merge(summary)


def _sync_batch_into(
    engine: sa.Engine,
    writer: FirestoreWriter,
    batch: Sequence[CustomerDocument],
    settings: MirrorSettings,
    summary: MirrorSummary,
    operation: Operation,
    force: bool,
    extra_stale: dict[str, dict[str, list[str]]] | None,
) -> None:
    summary.considered += len(batch)
    with engine.connect() as conn:
        states = _load_state(conn, [d.customer_id for d in batch])
    now = datetime.now(UTC)
    items: list[CustomerWrite] = []
    for document in batch:
        state = states.get(document.customer_id)
        if state is not None and not force:
            if state.status == "mirrored" and state.content_hash == document.content_hash:
                summary.unchanged += 1
                continue
            if state.status == "failed" and state.next_attempt_at and state.next_attempt_at > now:
                summary.deferred += 1
                continue
        stale = _merge_ids(
            state.subdocuments if state else {},
            (extra_stale or {}).get(document.customer_id, {}),
        )
        items.append(customer_upsert(document, stale, operation))
    if not items:
        return
    outcomes = writer.write(items)
    book = _Bookkeeping()
    _record_upserts(book, summary, items, outcomes, states, settings)
    book.flush(engine, summary.run_id)
