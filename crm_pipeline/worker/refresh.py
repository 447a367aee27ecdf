"""Refresh what a batch of deliveries touched: metrics and Firestore documents of those customers.

An adapter until crm_pipeline.changes.refresh.refresh_touched (a durable touched-customers log)
lands: the worker calls `refresh_touched` here with the ids its report names, so switching is one
line in crm_pipeline/worker/loop.py. Segments and predictive scores stay with the scheduled
refresh: both are fitted on the whole customer base, which costs seconds per batch. Manual
segments and statuses are written by the admin action handlers themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.analytics.metrics import compute_metrics
from crm_pipeline.firestore.documents import fetch_customer_documents, is_customer_id
from crm_pipeline.firestore.mirror import (
    FirestoreWriter,
    MirrorSettings,
    MirrorSummary,
    repair_mirror,
)
from crm_pipeline.firestore.mirror.sync import _sync_batch


@dataclass(frozen=True)
class RefreshResult:
    """What one refresh did (Dagster event metadata)."""

    customers_computed: int
    mirror: MirrorSummary


def refresh_touched(
    engine: sa.Engine,
    firestore_client: firestore.Client,
    mirror_settings: MirrorSettings,
    *,
    run_id: str,
    customer_ids: Iterable[str],
) -> RefreshResult:
    """Recompute the customers' metrics, then mirror their documents (written only on change)."""
    ids = sorted({i for i in customer_ids if is_customer_id(i)})
    summary = MirrorSummary(run_id=run_id)
    if not ids:
        return RefreshResult(0, summary)
    with engine.begin() as conn:
        computed = compute_metrics(conn, datetime.now(UTC), ids).customers
    with engine.connect() as conn:
        documents = fetch_customer_documents(conn, ids)
    with FirestoreWriter(
        firestore_client,
        mirror_settings.threads,
        mirror_settings.max_attempts,
        mirror_settings.backoff_seconds,
    ) as writer:
        _sync_batch(engine, writer, documents, mirror_settings, summary)
    live = {d.customer_id for d in documents}
    gone = [i for i in ids if i not in live]
    if gone:  # erased or merged away: their documents go (rare, so the slower repair path)
        summary.merge(repair_mirror(engine, firestore_client, gone, mirror_settings))
    return RefreshResult(computed, summary)
