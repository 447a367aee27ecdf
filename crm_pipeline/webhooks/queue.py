"""The webhook_events queue: claim, finish, retry with backoff, dead letters, replay.

A claim commits `processing` with attempts + 1 in its own transaction, so a delivery that keeps
killing the process still counts its attempts and ends dead. Each delivery's effect and its
`done` mark commit together, guarded by the claim token: a run whose lease expired (and whose
rows another run took over) cannot mark them.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from crm_pipeline.pii import mask_pii

log = logging.getLogger(__name__)

# The one definition of the late-subject grace; the docs quote it and a test checks they agree.
UNKNOWN_SUBJECT_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how late a failing delivery is retried, and when a claim is presumed dead."""

    max_attempts: int = 8
    base_delay: timedelta = timedelta(seconds=10)
    max_delay: timedelta = timedelta(hours=1)
    lease_timeout: timedelta = timedelta(minutes=5)
    # A delivery about a customer/order we do not know yet waits this long (from receipt) for it
    # to arrive: it is retried past max_attempts until then (docs/webhook-processing.md).
    unknown_subject_grace: timedelta = UNKNOWN_SUBJECT_GRACE

    def delay(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """Exponential backoff with jitter (50-100% of the capped delay) so retries spread out."""
        rng = rng or random
        capped = min(self.base_delay * (2 ** max(attempt - 1, 0)), self.max_delay)
        return capped * (0.5 + rng.random() / 2)


@dataclass(slots=True)
class Delivery:
    """One claimed webhook_events row."""

    id: int
    source: str
    topic: str
    delivery_id: str
    shop_domain: str | None
    received_at: datetime
    triggered_at: datetime | None
    payload: Any
    attempts: int
    subject_key: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def order_key(self) -> tuple[Any, ...]:
        return (self.triggered_at or self.received_at, self.received_at, self.id)


_RECLAIMABLE = "status = 'processing' AND claimed_at < now() - CAST(:lease AS interval)"

_CLAIM_SQL = f"""
WITH picked AS (
    SELECT id FROM webhook_events
    WHERE ((status IN ('pending', 'failed') AND next_attempt_at <= now())
           OR ({_RECLAIMABLE}))
      AND last_claimed_by IS DISTINCT FROM :token
    ORDER BY triggered_at NULLS LAST, received_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_events e
SET status = 'processing', attempts = e.attempts + 1, claimed_at = now(), claimed_by = :token,
    last_claimed_by = :token
FROM picked WHERE e.id = picked.id
RETURNING e.id, e.source, e.topic, e.delivery_id, e.shop_domain, e.received_at, e.triggered_at,
          e.payload, e.attempts, e.subject_key
"""

# A claim that expired this many times is a delivery that kills its run: stop retrying it.
_BURY_CRASHERS_SQL = f"""
UPDATE webhook_events
SET status = 'dead', claimed_at = NULL, claimed_by = NULL,
    last_error = 'processing run died (lease expired) on every one of ' || attempts || ' attempts'
WHERE {_RECLAIMABLE} AND attempts >= :max_attempts
"""


def claim(
    engine: sa.Engine,
    *,
    token: str,
    limit: int = 200,
    policy: RetryPolicy | None = None,
) -> list[Delivery]:
    """Take up to `limit` ready deliveries (oldest event first); SKIP LOCKED keeps runs apart.

    Deliveries this `token` claimed before are skipped, so one run never burns a delivery's
    retries; the mark lives on the row (`last_claimed_by`), so a long run holds no list of them.
    """
    policy = policy or RetryPolicy()
    lease = f"{policy.lease_timeout.total_seconds()} seconds"
    with engine.begin() as conn:
        conn.execute(
            sa.text(_BURY_CRASHERS_SQL), {"lease": lease, "max_attempts": policy.max_attempts}
        )
        rows = conn.execute(
            sa.text(_CLAIM_SQL),
            {"lease": lease, "limit": limit, "token": token},
        ).all()
    return [
        Delivery(
            id=r.id,
            source=r.source,
            topic=r.topic,
            delivery_id=r.delivery_id,
            shop_domain=r.shop_domain,
            received_at=r.received_at,
            triggered_at=r.triggered_at,
            payload=r.payload,
            attempts=r.attempts,
            subject_key=r.subject_key,
        )
        for r in rows
    ]


class LostClaim(RuntimeError):
    """Another run reclaimed this delivery (our lease expired); our effect must roll back."""


def mark_done(conn: sa.Connection, delivery: Delivery, token: str, outcome: str) -> None:
    """Finish a delivery inside the transaction that applied it."""
    updated = conn.execute(
        sa.text(
            "UPDATE webhook_events SET status = 'done', processed_at = now(), outcome = :outcome, "
            "last_error = NULL, claimed_at = NULL, claimed_by = NULL, subject_key = :subject "
            "WHERE id = :id AND status = 'processing' AND claimed_by = :token"
        ),
        {"id": delivery.id, "token": token, "outcome": outcome, "subject": delivery.subject_key},
    ).rowcount
    if updated != 1:
        raise LostClaim(f"delivery {delivery.id} was reclaimed by another run")


def mark_failed(
    engine: sa.Engine,
    delivery: Delivery,
    token: str,
    error: str,
    *,
    permanent: bool,
    policy: RetryPolicy | None = None,
    retry_until: datetime | None = None,
) -> str:
    """Record a failure: retry later with backoff, or dead letter. Returns the new status.

    `retry_until` (a late subject's grace end) keeps the delivery retrying past `max_attempts`
    until then, with the next attempt no later than that time. The error is masked (it is
    shown to analysts and operators).
    """
    policy = policy or RetryPolicy()
    dead = permanent or (delivery.attempts >= policy.max_attempts and retry_until is None)
    status = "dead" if dead else "failed"
    delay = policy.delay(delivery.attempts)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE webhook_events SET status = :status, last_error = :error, "
                "outcome = :outcome, claimed_at = NULL, claimed_by = NULL, "
                "subject_key = coalesce(subject_key, :subject), "
                "next_attempt_at = least(now() + CAST(:delay AS interval), "
                "coalesce(CAST(:until AS timestamptz), 'infinity')) "
                "WHERE id = :id AND status = 'processing' AND claimed_by = :token"
            ),
            {
                "status": status,
                "error": mask_pii(error)[:2000],
                "until": retry_until,
                "id": delivery.id,
                "token": token,
                "outcome": "dead" if dead else "retry",
                "subject": delivery.subject_key,
                "delay": f"{delay.total_seconds()} seconds",
            },
        )
    return status


def release(engine: sa.Engine, deliveries: list[Delivery], token: str) -> int:
    """Hand claimed, unstarted deliveries back (a stopping worker): ready now, attempt not counted.

    Only rows this token still holds are released; returns how many.
    """
    if not deliveries:
        return 0
    with engine.begin() as conn:
        return conn.execute(
            sa.text(
                "UPDATE webhook_events SET status = 'pending', "
                "attempts = greatest(attempts - 1, 0), next_attempt_at = now(), "
                "claimed_at = NULL, claimed_by = NULL, last_claimed_by = NULL "
                "WHERE id = ANY(:ids) AND status = 'processing' AND claimed_by = :token"
            ),
            {"ids": [d.id for d in deliveries], "token": token},
        ).rowcount


def replay(engine: sa.Engine, dead_only: bool = False, ids: list[int] | None = None) -> int:
    """Re-queue failed and dead deliveries (only dead ones, or only these ids) for the next run.

    Attempts restart at zero so a replayed delivery gets the full retry budget again.
    """
    statuses = ["dead"] if dead_only else ["failed", "dead"]
    query = (
        "UPDATE webhook_events SET status = 'pending', attempts = 0, next_attempt_at = now(), "
        "outcome = 'replayed', claimed_at = NULL, claimed_by = NULL "
        "WHERE status = ANY(:statuses)"
    )
    params: dict[str, Any] = {"statuses": statuses}
    if ids:
        query += " AND id = ANY(:ids)"
        params["ids"] = [int(i) for i in ids]
    with engine.begin() as conn:
        count = conn.execute(sa.text(query), params).rowcount
    log.info("replay re-queued %d deliveries", count)
    return count


@dataclass(frozen=True)
class QueueStats:
    """What the queue holds right now (for asset metadata, checks and the sensor)."""

    pending: int
    ready: int
    processing: int
    failed: int
    dead: int
    max_ready_id: int | None
    ready_attempts: int
    oldest_pending_age_seconds: float | None
    last_processed_at: datetime | None = None


def queue_stats(engine: sa.Engine, policy: RetryPolicy | None = None) -> QueueStats:
    policy = policy or RetryPolicy()
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                f"""
                SELECT
                  count(*) FILTER (WHERE status = 'pending') AS pending,
                  count(*) FILTER (WHERE ready) AS ready,
                  count(*) FILTER (WHERE status = 'processing') AS processing,
                  count(*) FILTER (WHERE status = 'failed') AS failed,
                  count(*) FILTER (WHERE status = 'dead') AS dead,
                  max(id) FILTER (WHERE ready) AS max_ready_id,
                  coalesce(sum(attempts) FILTER (WHERE ready), 0) AS ready_attempts,
                  extract(epoch FROM now() - min(received_at)
                          FILTER (WHERE status IN ('pending', 'failed', 'processing'))) AS age,
                  (SELECT max(processed_at) FROM webhook_events) AS last_processed_at
                FROM (
                  SELECT id, status, attempts, received_at,
                         (status IN ('pending', 'failed') AND next_attempt_at <= now())
                         OR ({_RECLAIMABLE}) AS ready
                  FROM webhook_events WHERE status <> 'done'
                ) q
                """
            ),
            {"lease": f"{policy.lease_timeout.total_seconds()} seconds"},
        ).one()
    return QueueStats(
        pending=row.pending,
        ready=row.ready,
        processing=row.processing,
        failed=row.failed,
        dead=row.dead,
        max_ready_id=row.max_ready_id,
        ready_attempts=int(row.ready_attempts),
        oldest_pending_age_seconds=float(row.age) if row.age is not None else None,
        last_processed_at=row.last_processed_at,
    )
