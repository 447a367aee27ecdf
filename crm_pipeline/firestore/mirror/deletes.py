"""Delete the documents of customers no longer live (soft-deleted, merged, redacted, gone)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime

import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.firestore.documents import (
    ACTIVITIES,
    ADDRESSES,
    CUSTOMERS,
    LIVE_CONDITION,
    ORDERS,
    SUBCOLLECTIONS,
    is_customer_id,
)
from crm_pipeline.firestore.mirror.bookkeeping import _Bookkeeping, _merge_ids, _State
from crm_pipeline.firestore.mirror.settings import MirrorSettings, MirrorSummary
from crm_pipeline.firestore.mirror.writer import (
    CustomerWrite,
    FirestoreWriter,
    _retry_delay,
    customer_delete,
)

_DEAD_CUSTOMERS = sa.text(
    """
    SELECT s.customer_id::text,
           CASE WHEN c.redacted_at IS NOT NULL THEN 'redact' ELSE 'delete' END,
           s.status, s.retry_count, s.next_attempt_at,
           s.address_ids::text[], s.order_ids::text[], s.activity_ids::text[]
    FROM firestore_mirror_state s
    LEFT JOIN customers c ON c.id = s.customer_id
    WHERE (c.id IS NULL OR NOT ("""
    + LIVE_CONDITION
    + """))
      AND s.customer_id > CAST(:after AS uuid)
      AND (CAST(:ids AS uuid[]) IS NULL OR s.customer_id = ANY(CAST(:ids AS uuid[])))
    ORDER BY s.customer_id
    LIMIT :limit
    """
)
_NIL_UUID = "00000000-0000-0000-0000-000000000000"


def list_subdocuments(client: firestore.Client, customer_id: str) -> dict[str, list[str]]:
    """Ids in the customer's subcollections as Firestore has them (for deletes and repairs)."""
    root = client.collection(CUSTOMERS).document(customer_id)
    return {
        name: [ref.id for ref in root.collection(name).list_documents(page_size=300)]
        for name in SUBCOLLECTIONS
    }


def _delete_dead(
    engine: sa.Engine,
    client: firestore.Client,
    writer: FirestoreWriter,
    settings: MirrorSettings,
    summary: MirrorSummary,
    among: Collection[str] | None = None,
) -> None:
    """Delete documents of customers no longer live (soft-deleted, merged, redacted, gone);
    with `among`, only of those customers."""
    after = _NIL_UUID
    ids = None if among is None else sorted({i for i in among if is_customer_id(i)})
    if ids == []:
        return
    now = datetime.now(UTC)
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                _DEAD_CUSTOMERS, {"after": after, "limit": settings.batch_size, "ids": ids}
            ).all()
        if not rows:
            return
        after = rows[-1][0]
        due = [r for r in rows if not (r[2] == "failed" and r[4] is not None and r[4] > now)]
        summary.deferred += len(rows) - len(due)
        # Listing catches subdocuments written outside the recorded ids (e.g. a partial write).
        listed = dict(
            zip(
                [r[0] for r in due],
                writer.map(lambda r: list_subdocuments(client, r[0]), due),
                strict=True,
            )
        )
        items: list[CustomerWrite] = []
        states: dict[str, _State] = {}
        for cid, operation, status, retry_count, next_at, a_ids, o_ids, x_ids in due:
            recorded = {ADDRESSES: a_ids or [], ORDERS: o_ids or [], ACTIVITIES: x_ids or []}
            states[cid] = _State(None, status, retry_count, next_at, recorded)
            items.append(customer_delete(cid, _merge_ids(recorded, listed[cid]), operation))
        summary.considered += len(items)
        outcomes = writer.write(items) if items else {}
        book = _Bookkeeping()
        for item in items:
            outcome = outcomes[item.customer_id]
            if outcome.ok:
                summary.deleted += 1
                summary.documents_written += len(item.writes)
                book.removed.append(item.customer_id)
            else:
                summary.failed += 1
                summary.failed_ids.append(item.customer_id)
                state = states[item.customer_id]
                failed_runs = state.retry_count + 1
                book.state(
                    item.customer_id,
                    None,
                    state.subdocuments,
                    "failed",
                    failed_runs,
                    outcome.error,
                    _retry_delay(settings, failed_runs),
                )
            book.log(item.customer_id, item.operation, outcome, {"operation": item.operation})
        book.flush(engine, summary.run_id)
