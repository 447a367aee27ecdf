"""The dashboard documents: `stats/current`, the day's `stats/history/days/{date}`, one
`segments/{name}` per segment and the `recent_activity` feed.

Called by the `firestore_dashboard_mirror` asset (full refresh, incremental sync and
process_webhooks) and by anything else that changed customers (the worker): cheap enough to run
after every batch of deliveries (a few aggregate queries, ~10 stats/segment writes, and only the
feed items that changed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.firestore.dashboard_documents import (
    RECENT_ACTIVITY,
    fetch_dashboard_documents,
    fetch_recent_activity,
    stats_history_path,
)
from crm_pipeline.firestore.documents import SEGMENTS, STATS, STATS_DOCUMENT
from crm_pipeline.firestore.mirror.writer import MAX_BATCH_WRITES

Op = tuple[str, dict[str, Any] | None]  # (document path, data or None to delete)


@dataclass
class DashboardSummary:
    written: int
    deleted: int
    segments: int
    history_day: str = ""
    activity_written: int = 0
    activity_deleted: int = 0


def _commit(client: firestore.Client, ops: Iterable[Op]) -> None:
    batch = client.batch()
    count = 0
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


def _feed_ops(client: firestore.Client, feed: dict[str, dict[str, Any]]) -> list[Op]:
    """Writes for new or changed feed items, deletes for items that fell out of it."""
    existing = {
        snapshot.id: (snapshot.to_dict() or {}).get("fingerprint")
        for snapshot in client.collection(RECENT_ACTIVITY).select(["fingerprint"]).stream()
    }
    ops: list[Op] = [
        (f"{RECENT_ACTIVITY}/{activity_id}", item)
        for activity_id, item in feed.items()
        if existing.get(activity_id) != item["fingerprint"]
    ]
    ops.extend((f"{RECENT_ACTIVITY}/{i}", None) for i in existing if i not in feed)
    return ops


def sync_dashboard(
    engine: sa.Engine, client: firestore.Client, today: date | None = None
) -> DashboardSummary:
    """Write the stats (current and today's history), the segments and the activity feed;
    delete segment documents and feed items that went away. `today` (UTC) names the history
    document (default: the current UTC date)."""
    day = today or datetime.now(UTC).date()
    with engine.connect() as conn:
        docs = fetch_dashboard_documents(conn)
        feed = fetch_recent_activity(conn)
    stats = docs[f"{STATS}/{STATS_DOCUMENT}"]
    ops: list[Op] = [
        (path, {**data, "updated_at": firestore.SERVER_TIMESTAMP}) for path, data in docs.items()
    ]
    ops.append(
        (
            stats_history_path(day),
            {**stats, "date": day.isoformat(), "updated_at": firestore.SERVER_TIMESTAMP},
        )
    )
    existing = [ref.id for ref in client.collection(SEGMENTS).list_documents(page_size=300)]
    gone = [f"{SEGMENTS}/{doc_id}" for doc_id in existing if f"{SEGMENTS}/{doc_id}" not in docs]
    ops.extend((path, None) for path in gone)
    feed_ops = _feed_ops(client, feed)
    _commit(client, [*ops, *feed_ops])
    return DashboardSummary(
        written=len(docs) + 1,
        deleted=len(gone),
        segments=sum(1 for path in docs if path.startswith(f"{SEGMENTS}/")),
        history_day=day.isoformat(),
        activity_written=sum(1 for _, data in feed_ops if data is not None),
        activity_deleted=sum(1 for _, data in feed_ops if data is None),
    )
