"""Re-mirror named customers whatever their recorded state (the repair job after drift)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.firestore.documents import fetch_customer_documents, is_customer_id
from crm_pipeline.firestore.mirror.bookkeeping import _Bookkeeping
from crm_pipeline.firestore.mirror.deletes import list_subdocuments
from crm_pipeline.firestore.mirror.settings import MirrorSettings, MirrorSummary
from crm_pipeline.firestore.mirror.sync import _sync_batch
from crm_pipeline.firestore.mirror.writer import FirestoreWriter, customer_delete


def repair_mirror(
    engine: sa.Engine,
    client: firestore.Client,
    ids: Iterable[str],
    settings: MirrorSettings | None = None,
) -> MirrorSummary:
    """Re-mirror the given customers from PostgreSQL whatever the recorded state says.

    Live customers are rewritten and any subdocument Firestore has beyond the current ones is
    deleted; ids that are not live customers have their document and subcollections deleted.
    """
    settings = settings or MirrorSettings()
    summary = MirrorSummary(run_id=f"repair-{uuid.uuid4().hex[:12]}")
    started = time.perf_counter()
    id_list = sorted(set(ids))
    with FirestoreWriter(
        client, settings.threads, settings.max_attempts, settings.backoff_seconds
    ) as writer:
        for start in range(0, len(id_list), settings.batch_size):
            chunk = id_list[start : start + settings.batch_size]
            with engine.connect() as conn:
                documents = fetch_customer_documents(conn, chunk)
            listed = dict(
                zip(
                    chunk,
                    writer.map(lambda cid: list_subdocuments(client, cid), chunk),
                    strict=True,
                )
            )
            _sync_batch(engine, writer, documents, settings, summary, "repair", True, listed)
            live = {d.customer_id for d in documents}
            gone = [cid for cid in chunk if cid not in live]
            if gone:
                items = [customer_delete(cid, listed[cid], "repair") for cid in gone]
                summary.considered += len(items)
                outcomes = writer.write(items)
                book = _Bookkeeping()
                for item in items:
                    outcome = outcomes[item.customer_id]
                    if outcome.ok:
                        summary.deleted += 1
                        summary.documents_written += len(item.writes)
                        if is_customer_id(item.customer_id):
                            book.removed.append(item.customer_id)
                    else:
                        summary.failed += 1
                        summary.failed_ids.append(item.customer_id)
                    book.log(item.customer_id, "repair", outcome, {"operation": "delete"})
                book.flush(engine, summary.run_id)
    summary.seconds = time.perf_counter() - started
    return summary
