"""Customer-hash buckets: a full recompute split into N independent pieces.

A customer belongs to bucket `mod(hashtext(id::text) + 2^31, N)`: stable, computed in
PostgreSQL, and needing no column or migration. Each piece recomputes the metrics, scores,
segments and Firestore documents of its bucket's customers exactly as the unbucketed full run
would: scores come from the stored model fit (fitted on every buyer) and the segment percentiles
still come from everyone, so the union of the buckets equals one full run (docs/scaling.md).
Once every bucket succeeded, the change log's consumers move to where the log stood before the
first bucket (`change_log_position`, `advance_covered`), as a full run moves them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.analytics.metrics import compute_metrics
from crm_pipeline.analytics.segments import INACTIVE_AFTER_DAYS, refresh_segments
from crm_pipeline.changes.log import (
    CORE_CONSUMERS,
    ChangeWindow,
    advance,
    horizon,
    lock_consumer,
    prune,
    safe_horizon,
)
from crm_pipeline.firestore.mirror import MirrorSettings, MirrorSummary, sync_mirror

# hashtext is a signed int4: shifting by 2^31 makes the modulus non-negative
_IN_BUCKET = "mod(hashtext({column}::text)::bigint + 2147483648, :count) = :index"


def in_bucket_sql(column: str) -> str:
    """The SQL condition `column` (a customer id) is in bucket :index of :count."""
    return _IN_BUCKET.format(column=column)


@dataclass(frozen=True)
class Bucket:
    """Bucket `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"bucket {self.index} of {self.count} does not exist")

    @property
    def params(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}


def all_buckets(count: int) -> list[Bucket]:
    return [Bucket(i, count) for i in range(count)]


def bucket_customers(conn: sa.Connection, bucket: Bucket, *, live_only: bool = False) -> list[str]:
    """The ids of the bucket's customers (with the deleted and merged unless `live_only`)."""
    live = " AND deleted_at IS NULL AND merged_into IS NULL" if live_only else ""
    sql = f"SELECT id::text FROM customers WHERE {_IN_BUCKET.format(column='id')}{live}"  # noqa: S608 -- constant fragments, values bound
    return list(conn.execute(sa.text(sql), bucket.params).scalars())


def _bucket_metrics_rows(conn: sa.Connection, bucket: Bucket) -> list[str]:
    sql = (
        "SELECT customer_id::text FROM customer_metrics "  # noqa: S608 -- constant fragment
        f"WHERE {_IN_BUCKET.format(column='customer_id')}"
    )
    return list(conn.execute(sa.text(sql), bucket.params).scalars())


def metrics_bucket(engine: sa.Engine, bucket: Bucket, as_of: datetime) -> int:
    """Metrics and scores of the bucket's customers as of `as_of`; returns customers computed.

    Scores go to every metrics row of the bucket, as a full run scores every metrics row."""
    from crm_pipeline.analytics.scores import write_scores  # pandas loads here, not at start

    with engine.begin() as conn:
        live = bucket_customers(conn, bucket, live_only=True)
        computed = compute_metrics(conn, as_of, live).customers if live else 0
        write_scores(conn, as_of, _bucket_metrics_rows(conn, bucket))
    return computed


def segments_bucket(
    engine: sa.Engine,
    bucket: Bucket,
    as_of: datetime,
    inactive_after_days: int = INACTIVE_AFTER_DAYS,
) -> int:
    """Segment assignments and status of the bucket's customers (thresholds from everyone:
    run after every bucket's metrics). Returns the customers considered."""
    with engine.begin() as conn:
        ids = bucket_customers(conn, bucket)
        if ids:
            refresh_segments(conn, as_of, ids, inactive_after_days)
    return len(ids)


def mirror_bucket(
    engine: sa.Engine,
    client: firestore.Client,
    bucket: Bucket,
    settings: MirrorSettings | None = None,
    *,
    run_id: str | None = None,
) -> MirrorSummary:
    """Firestore documents of the bucket's live customers; deletes those of its dead ones."""
    with engine.connect() as conn:
        ids = bucket_customers(conn, bucket)
    return sync_mirror(engine, client, settings, run_id=run_id, customer_ids=ids)


def change_log_position(engine: sa.Engine) -> int:
    """Where the change log stands before the first bucket starts: every change below it was
    committed by then, so the buckets' recompute includes it."""
    with engine.connect() as conn:
        return safe_horizon(conn)


def advance_covered(
    engine: sa.Engine, position: int, consumers: tuple[str, ...] = CORE_CONSUMERS
) -> int:
    """Move `consumers` to `position` (read by `change_log_position` before the buckets
    started), once every bucket succeeded: the next incremental run skips what the buckets
    recomputed and still sees what changed during them. Never moves a horizon back (a
    concurrent incremental run may be further). Returns the changes pruned."""
    with engine.begin() as conn:
        customers = int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM customers "
                    "WHERE deleted_at IS NULL AND merged_into IS NULL"
                )
            ).scalar_one()
        )
        for consumer in consumers:  # in refresh order, as incremental runs lock them
            lock_consumer(conn, consumer)
            start = horizon(conn, consumer)
            advance(conn, ChangeWindow(consumer, start, max(start, position), []), customers)
        return prune(conn)
