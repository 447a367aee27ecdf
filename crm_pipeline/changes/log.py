"""The customer change log: windows of touched customers per consumer, progress, pruning.

A consumer's progress is a transaction-id horizon, not a change_id: change ids are taken at
insert time while rows become visible at commit, so a slow transaction could commit ids below a
change_id watermark and be skipped forever. Every transaction older than the oldest one still
running (the snapshot's xmin) has ended, so a window up to that horizon is complete and final.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

#: The consumers of the refresh, in the order each waits for the one before.
METRICS = "metrics"
SEGMENTS = "segments"
MIRROR = "mirror"
UPSTREAM = {SEGMENTS: METRICS, MIRROR: SEGMENTS}
CORE_CONSUMERS = (METRICS, SEGMENTS, MIRROR)


@dataclass(frozen=True)
class ChangeWindow:
    """The customers changed by transactions in [start, end) that `consumer` has not seen."""

    consumer: str
    start: int
    end: int
    customer_ids: list[str]


def safe_horizon(conn: sa.Connection) -> int:
    """A transaction id below which every transaction has ended (committed or rolled back)."""
    return int(
        conn.execute(sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")).one()[0]
    )


def horizon(conn: sa.Connection, consumer: str) -> int:
    """How far `consumer` has read (0: never ran, everything in the log is new to it)."""
    value = conn.execute(
        sa.text("SELECT horizon FROM change_consumers WHERE consumer = :c"), {"c": consumer}
    ).scalar_one_or_none()
    return int(value or 0)


def upper_bound(conn: sa.Connection, consumer: str) -> int:
    """Where `consumer` may read to: its upstream stage's horizon, or the safe horizon."""
    upstream = UPSTREAM.get(consumer)
    return safe_horizon(conn) if upstream is None else horizon(conn, upstream)


def lock_consumer(conn: sa.Connection, consumer: str) -> None:
    """Serialize runs of one consumer (process_webhooks beside incremental_sync) until the
    transaction ends: the second reads its window after the first advanced."""
    conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(hashtext('crm_pipeline.changes:' || :c))"),
        {"c": consumer},
    )


def read_window(
    conn: sa.Connection, consumer: str, limit: int | None = None, *, with_ids: bool = True
) -> ChangeWindow:
    """The next window of `consumer`; with `limit`, whole transactions up to about that many
    customers (at least one transaction, however large). A full run passes `with_ids=False`:
    it recomputes everyone and only needs the horizon to move to."""
    start = horizon(conn, consumer)
    end = max(start, upper_bound(conn, consumer))
    if limit is not None and end > start:
        sizes = conn.execute(
            sa.text(
                "SELECT txid, count(DISTINCT customer_id) FROM customer_changes "
                "WHERE txid >= :s AND txid < :e GROUP BY txid ORDER BY txid"
            ),
            {"s": start, "e": end},
        ).all()
        total = 0
        for index, (txid, count) in enumerate(sizes):
            if index > 0 and total + count > limit:
                end = int(txid)
                break
            total += count
    if not with_ids:
        return ChangeWindow(consumer, start, end, [])
    ids = [
        str(r[0])
        for r in conn.execute(
            sa.text(
                "SELECT DISTINCT customer_id FROM customer_changes "
                "WHERE txid >= :s AND txid < :e ORDER BY customer_id"
            ),
            {"s": start, "e": end},
        )
    ]
    return ChangeWindow(consumer, start, end, ids)


def advance(conn: sa.Connection, window: ChangeWindow, customers: int | None = None) -> None:
    """Record that `window` was processed (never moves a horizon back)."""
    conn.execute(
        sa.text(
            """
            INSERT INTO change_consumers AS c (consumer, horizon, customers_last_run, updated_at)
            VALUES (:c, :h, :n, now())
            ON CONFLICT (consumer) DO UPDATE SET
                horizon = greatest(c.horizon, EXCLUDED.horizon),
                customers_last_run = EXCLUDED.customers_last_run,
                updated_at = now()
            """
        ),
        {
            "c": window.consumer,
            "h": window.end,
            "n": len(window.customer_ids) if customers is None else customers,
        },
    )


def prune(conn: sa.Connection) -> int:
    """Delete changes every consumer has passed; until each core stage has run once, none."""
    horizons: dict[str, int] = dict(
        conn.execute(sa.text("SELECT consumer, horizon FROM change_consumers")).tuples().all()
    )
    if not horizons or any(c not in horizons for c in CORE_CONSUMERS):
        return 0
    return conn.execute(
        sa.text("DELETE FROM customer_changes WHERE txid < :h"), {"h": min(horizons.values())}
    ).rowcount


def live_ids(conn: sa.Connection, ids: list[str]) -> list[str]:
    """The ids among `ids` that are live customers (not deleted, merged or gone)."""
    if not ids:
        return []
    return [
        str(r[0])
        for r in conn.execute(
            sa.text(
                "SELECT id FROM customers WHERE id = ANY(CAST(:ids AS uuid[])) "
                "AND deleted_at IS NULL AND merged_into IS NULL ORDER BY id"
            ),
            {"ids": ids},
        )
    ]


@contextmanager
def not_recorded(conn: sa.Connection) -> Iterator[None]:
    """Writes derived from the log (segments, VIP status) do not feed it back: the same
    refresh mirrors them."""
    conn.execute(sa.text("SELECT set_config('crm.record_changes', 'off', true)"))
    try:
        yield
    finally:
        conn.execute(sa.text("SELECT set_config('crm.record_changes', 'on', true)"))
