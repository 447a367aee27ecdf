"""A mirror run: keyset batches of live customers (or only the touched ones), written only when
their hash changed.

Two hashes per customer: the document with its addresses (`content_hash`) and its history
(`history_hash`, crm_pipeline.firestore.history). When only the first moved, only the document
is rewritten; when the second moved, the customer's subdocument state is read and only new or
changed orders, activities and notes are set, and removed ones deleted.
"""

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
from crm_pipeline.firestore.history import fetch_history, history_hash, history_hashes
from crm_pipeline.firestore.lost import ensure_emulator
from crm_pipeline.firestore.mirror.bookkeeping import (
    _Bookkeeping,
    _load_state,
    _merge_ids,
    _record_upserts,
    _State,
)
from crm_pipeline.firestore.mirror.deletes import _delete_dead
from crm_pipeline.firestore.mirror.settings import MirrorSettings, MirrorSummary
from crm_pipeline.firestore.mirror.subdocuments import diff_history, load_recorded
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
# History subdocuments built in memory at once: customers needing writes are handled in groups
# of about this many (a first sync of long histories stays bounded in memory).
_HISTORY_GROUP = 20_000


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
        # Only mirrored customers are compared; the others' history is built anyway (a first
        # sync builds each history once, not twice).
        known = [cid for cid, s in states.items() if s.status == "mirrored" and not force]
        hashes = history_hashes(conn, known)
    now = datetime.now(UTC)
    # (document, rewrite the document, rewrite the history) for each customer needing work
    todo: list[tuple[CustomerDocument, bool, bool]] = []
    for document in batch:
        state = states.get(document.customer_id)
        if state is not None and not force:
            if state.status == "failed" and state.next_attempt_at and state.next_attempt_at > now:
                summary.deferred += 1
                continue
            mirrored = state.status == "mirrored"
            root = not mirrored or state.content_hash != document.content_hash
            history = not mirrored or state.history_hash != hashes[document.customer_id]
            if not root and not history:
                summary.unchanged += 1
                continue
            todo.append((document, root, history))
        else:
            todo.append((document, True, True))
    for group in _groups(todo):
        _write_group(
            engine, writer, group, states, settings, summary, operation, force, extra_stale
        )


def _groups(
    todo: Sequence[tuple[CustomerDocument, bool, bool]],
) -> Iterator[list[tuple[CustomerDocument, bool, bool]]]:
    """Consecutive groups of about _HISTORY_GROUP history subdocuments (by the counts)."""
    group: list[tuple[CustomerDocument, bool, bool]] = []
    size = 0
    for entry in todo:
        weight = 1 + (entry[0].history_size if entry[2] else 0)
        if group and size + weight > _HISTORY_GROUP:
            yield group
            group, size = [], 0
        group.append(entry)
        size += weight
    if group:
        yield group


def _write_group(
    engine: sa.Engine,
    writer: FirestoreWriter,
    group: Sequence[tuple[CustomerDocument, bool, bool]],
    states: dict[str, _State],
    settings: MirrorSettings,
    summary: MirrorSummary,
    operation: Operation,
    force: bool,
    extra_stale: dict[str, dict[str, list[str]]] | None,
) -> None:
    history_ids = [document.customer_id for document, _, history in group if history]
    with engine.connect() as conn:
        histories = fetch_history(conn, history_ids)
        recorded = load_recorded(conn, history_ids)
    items: list[CustomerWrite] = []
    quiet: list[CustomerWrite] = []  # the history hash moved but no subdocument did
    for document, root, history in group:
        cid = document.customer_id
        state = states.get(cid)
        extra = (extra_stale or {}).get(cid, {})
        diff = None
        if history:
            # Hashed from what is written (the SQL hash may predate a change made since).
            built = histories[cid]
            diff = diff_history(cid, built, history_hash(built), recorded[cid], extra, force)
        stale = _merge_ids(state.subdocuments if state else {}, extra)
        item = customer_upsert(document, stale, operation, diff, root)
        (items if item.writes else quiet).append(item)
    outcomes = writer.write(items) if items else {}
    book = _Bookkeeping()
    _record_upserts(book, summary, items, outcomes, states, settings)
    for item in quiet:
        summary.unchanged += 1
        assert item.document is not None and item.history is not None
        state = states[item.customer_id]
        book.state(
            item.customer_id,
            item.document.content_hash,
            state.subdocuments,
            "mirrored",
            history_hash=item.history.history_hash,
        )
    book.flush(engine, summary.run_id)
