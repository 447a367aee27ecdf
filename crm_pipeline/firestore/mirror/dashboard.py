"""The dashboard documents: `stats/current` and one `segments/{name}` per segment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.firestore.documents import SEGMENTS, fetch_dashboard_documents
from crm_pipeline.firestore.mirror.writer import MAX_BATCH_WRITES


@dataclass
class DashboardSummary:
    written: int
    deleted: int
    segments: int


def sync_dashboard(engine: sa.Engine, client: firestore.Client) -> DashboardSummary:
    """Write `stats/current` and `segments/{name}`; delete segment documents that went away."""
    with engine.connect() as conn:
        docs = fetch_dashboard_documents(conn)
    batch = client.batch()
    count = 0
    deleted = 0
    ops: list[tuple[str, dict[str, Any] | None]] = []
    for path, data in docs.items():
        ops.append((path, {**data, "updated_at": firestore.SERVER_TIMESTAMP}))
    existing = [ref.id for ref in client.collection(SEGMENTS).list_documents(page_size=300)]
    for doc_id in existing:
        if f"{SEGMENTS}/{doc_id}" not in docs:
            ops.append((f"{SEGMENTS}/{doc_id}", None))
            deleted += 1
    for path, data in ops:
        ref = client.document(path)
        if data is None:
            batch.delete(ref)
        else:
            batch.set(ref, data)
        count += 1
        if count % MAX_BATCH_WRITES == 0:
            batch.commit()
            batch = client.batch()
    if count % MAX_BATCH_WRITES:
        batch.commit()
    segments = sum(1 for path in docs if path.startswith(f"{SEGMENTS}/"))
    return DashboardSummary(written=len(docs), deleted=deleted, segments=segments)
