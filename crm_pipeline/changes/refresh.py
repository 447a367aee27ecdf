"""Refresh what changed: metrics, scores, segments and the Firestore mirror of touched customers.

Three stages, each a consumer of the change log whose window ends where the stage before it got
to (metrics -> segments -> mirror), so a document is never built from metrics or segments older
than the change that touched it. Each Postgres stage advances its horizon in the transaction
that wrote its results; the mirror advances after its writes, so a crash anywhere re-processes
the window on the next run (every stage is idempotent). `full=True` recomputes everyone and
moves the horizon the same way (full_refresh, the nightly reconcile).

The Dagster assets (defs/analytics, defs/firestore_mirror) call the stages one by one;
`refresh_touched` runs them all for callers outside Dagster (the worker).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.analytics._db import as_utc
from crm_pipeline.analytics.metrics import compute_metrics
from crm_pipeline.analytics.segments import INACTIVE_AFTER_DAYS, refresh_segments
from crm_pipeline.changes.log import (
    METRICS,
    MIRROR,
    SEGMENTS,
    ChangeWindow,
    advance,
    live_ids,
    lock_consumer,
    prune,
    read_window,
)
from crm_pipeline.firestore.mirror import MirrorSettings, MirrorSummary, sync_dashboard, sync_mirror

log = logging.getLogger(__name__)


@dataclass
class MetricsRefresh:
    """What the metrics stage did; `scores` is the model metadata (None when nobody changed)."""

    window: ChangeWindow
    as_of: datetime
    full: bool
    customers: int
    scores: dict[str, Any] | None = None


@dataclass
class SegmentsRefresh:
    window: ChangeWindow
    full: bool
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class MirrorRefresh:
    window: ChangeWindow
    full: bool
    summary: MirrorSummary
    pruned: int = 0


@dataclass
class RefreshSummary:
    """What `refresh_touched` did, stage by stage."""

    run_id: str
    metrics: MetricsRefresh
    segments: SegmentsRefresh
    mirror: MirrorRefresh
    dashboard_written: int = 0

    @property
    def customers(self) -> int:
        """Live customers whose metrics were recomputed."""
        return self.metrics.customers

    def as_metadata(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "customers_computed": self.metrics.customers,
            "segment_assignments": int(self.segments.summary.get("assignments", 0)),
            "mirror_written": self.mirror.summary.written,
            "mirror_deleted": self.mirror.summary.deleted,
            "mirror_failed": self.mirror.summary.failed,
            "changes_pruned": self.mirror.pruned,
            "dashboard_written": self.dashboard_written,
        }


def refresh_metrics(
    engine: sa.Engine,
    as_of: datetime | None = None,
    *,
    full: bool = False,
    limit: int | None = None,
) -> MetricsRefresh:
    """Recompute metrics and scores of the customers changed since the last run (everyone when
    `full`), advancing the metrics horizon in the same transaction."""
    # pandas and the models load here, not with the code location (fast starts)
    from crm_pipeline.analytics.scores import write_scores

    moment = as_utc(as_of)
    with engine.begin() as conn:
        lock_consumer(conn, METRICS)
        window = read_window(conn, METRICS, None if full else limit, with_ids=not full)
        if not full and not window.customer_ids:
            advance(conn, window, 0)
            return MetricsRefresh(window, moment, full, 0)
        ids = None if full else live_ids(conn, window.customer_ids)
        computed = compute_metrics(conn, moment, ids).customers if ids != [] else 0
        # the dead among the touched lose their scores, as in a full run
        scores = write_scores(conn, moment, None if full else window.customer_ids)
        advance(conn, window, computed)
    return MetricsRefresh(window, moment, full, computed, scores)


def refresh_segment_assignments(
    engine: sa.Engine,
    as_of: datetime | None = None,
    *,
    full: bool = False,
    inactive_after_days: int = INACTIVE_AFTER_DAYS,
) -> SegmentsRefresh:
    """Rewrite the segment assignments of the customers whose metrics were recomputed since the
    last run (thresholds still from everyone); everyone's when `full`."""
    with engine.begin() as conn:
        lock_consumer(conn, SEGMENTS)
        window = read_window(conn, SEGMENTS, with_ids=not full)
        if not full and not window.customer_ids:
            advance(conn, window)
            return SegmentsRefresh(window, full, {"assignments": 0})
        summary = refresh_segments(
            conn, as_of, None if full else window.customer_ids, inactive_after_days
        )
        advance(conn, window)
    return SegmentsRefresh(window, full, summary)


def refresh_mirror(
    engine: sa.Engine,
    client: firestore.Client,
    settings: MirrorSettings | None = None,
    *,
    run_id: str | None = None,
    full: bool = False,
) -> MirrorRefresh:
    """Mirror the customers whose segments were refreshed since the last run (everyone, with
    the deletes of the dead, when `full`); then prune the changes every consumer passed."""
    with engine.connect() as conn:
        window = read_window(conn, MIRROR, with_ids=not full)
        conn.rollback()
    summary = sync_mirror(
        engine,
        client,
        settings,
        run_id=run_id,
        customer_ids=None if full else window.customer_ids,
    )
    # Failed customers stay 'failed' with a next attempt time: the next run retries them
    # whether or not they change again, so the horizon moves past them.
    with engine.begin() as conn:
        advance(conn, window, summary.written + summary.deleted)
        pruned = prune(conn)
    return MirrorRefresh(window, full, summary, pruned)


def refresh_touched(
    engine: sa.Engine,
    firestore_client: firestore.Client,
    mirror_settings: MirrorSettings | None,
    *,
    run_id: str,
    limit: int | None = None,
    dashboard: bool = True,
) -> RefreshSummary:
    """Consume the change log: metrics, scores, segments, mirror and dashboard of the customers
    touched since the last refresh, each stage advancing its horizon after it succeeded.

    `limit` bounds the customers taken on (whole transactions; the rest waits for the next call).
    `dashboard=False` leaves the dashboard to the caller (the worker answers the admin app first
    and refreshes the dashboard at most every few seconds: it reads every customer).
    Safe to call again after a crash: unfinished windows are simply processed again.
    """
    metrics = refresh_metrics(engine, limit=limit)
    segments = refresh_segment_assignments(engine, metrics.as_of)
    mirror = refresh_mirror(engine, firestore_client, mirror_settings, run_id=run_id)
    written = 0
    if dashboard and (metrics.customers or mirror.summary.written or mirror.summary.deleted):
        written = sync_dashboard(engine, firestore_client).written
    summary = RefreshSummary(run_id, metrics, segments, mirror, written)
    log.info("refresh %s: %s", run_id, summary.as_metadata())
    return summary
