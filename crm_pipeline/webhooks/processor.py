"""Drain webhook_events: claim ready deliveries, apply each once in effect, record the outcome.

Each delivery is one transaction: the handler's writes, the customers' updated_at bump, the
change log rows (crm_pipeline.changes: what the metrics and the Firestore mirror refresh) and
the `done` mark commit together. A crash
between deliveries loses nothing (the claimed rest is reclaimed after the lease); a crash inside
one rolls its effect back. Handlers are idempotent and order-tolerant, so a retry, a replay or a
reclaim converges on the state of applying every delivery once in triggered_at order.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.ingest.tombstones import find_tombstoned
from crm_pipeline.pii import mask_pii
from crm_pipeline.webhooks.admin_actions import ADMIN_HANDLERS
from crm_pipeline.webhooks.context import (
    ApplyContext,
    Loaders,
    Outcome,
    PermanentError,
    UnknownSubject,
)
from crm_pipeline.webhooks.gdpr import GDPR_HANDLERS, REDACTED_MARKER
from crm_pipeline.webhooks.queue import (
    Delivery,
    LostClaim,
    RetryPolicy,
    claim,
    mark_done,
    mark_failed,
    queue_stats,
    release,
)
from crm_pipeline.webhooks.subjects import subject_key
from crm_pipeline.webhooks.topics import SHOPIFY_HANDLERS, Handler, klaviyo_item

log = logging.getLogger(__name__)

_ORIGINS = {"manual": "staff_action"}


@dataclass
class ProcessReport:
    """What one processing run did (asset metadata)."""

    claimed: int = 0
    outcomes: Counter = field(default_factory=Counter)
    retry_scheduled: int = 0
    dead: int = 0
    lost_claims: int = 0
    retried_deliveries: int = 0
    released: int = 0
    errors: list[str] = field(default_factory=list)
    touched_customer_ids: set[str] = field(default_factory=set)

    @property
    def processed(self) -> int:
        return sum(self.outcomes.values())

    def as_metadata(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "processed": self.processed,
            "applied": self.outcomes["applied"],
            "stale": self.outcomes["stale"],
            "duplicates": self.outcomes["duplicate"],
            "unknown_topics": self.outcomes["unknown_topic"],
            "refused_redacted": self.outcomes["refused_redacted"],
            "failed": self.retry_scheduled,
            "dead": self.dead,
            "lost_claims": self.lost_claims,
            "retried_deliveries": self.retried_deliveries,
            "outcomes": dict(self.outcomes.most_common()),
            "touched_customer_ids": len(self.touched_customer_ids),
        }


def handler_for(delivery: Delivery) -> Handler | None:
    """The handler of a delivery's topic, or None for a topic we do not apply."""
    if delivery.source == "shopify":
        return GDPR_HANDLERS.get(delivery.topic) or SHOPIFY_HANDLERS.get(delivery.topic)
    if delivery.source == "klaviyo":
        return klaviyo_item
    if delivery.source == "manual":
        return ADMIN_HANDLERS.get(delivery.topic)
    return None


def _subject_redacted(conn: sa.Connection, subject_key: str | None) -> bool:
    if not subject_key or ":" not in subject_key:
        return False
    prefix, ident = subject_key.split(":", 1)
    if prefix not in ("shopify", "klaviyo"):
        return False
    ident = ident.rsplit("/", 1)[-1]
    return bool(find_tombstoned(conn, [(f"{prefix}_id", ident)]))


def _scrub(conn: sa.Connection, delivery: Delivery) -> None:
    """A delivery about an erased person keeps no PII either."""
    conn.execute(
        sa.text(
            "UPDATE webhook_events SET payload = CAST(:m AS jsonb), headers = '{}'::jsonb "
            "WHERE id = :id"
        ),
        {"m": orjson.dumps(REDACTED_MARKER).decode(), "id": delivery.id},
    )


def apply_delivery(
    conn: sa.Connection,
    delivery: Delivery,
    loaders: Loaders,
    *,
    policy: RetryPolicy,
    exports_dir: Path | None = None,
) -> Outcome:
    """Apply one delivery inside `conn`'s transaction (no queue bookkeeping)."""
    handler = handler_for(delivery)
    if handler is None:
        return Outcome("unknown_topic")
    if delivery.topic not in GDPR_HANDLERS and _subject_redacted(conn, delivery.subject_key):
        _scrub(conn, delivery)
        return Outcome("refused_redacted")
    loaders.bind(conn, delivery.id)
    try:
        ctx = ApplyContext(conn, delivery, loaders, exports_dir, policy.unknown_subject_grace)
        outcome = handler(ctx)
    finally:
        loaders.bind(None, None)
    if outcome.outcome == "refused_redacted":
        _scrub(conn, delivery)
    return outcome


def process_pending(
    engine: sa.Engine,
    *,
    run_id: str | None = None,
    batch_size: int = 100,
    max_deliveries: int | None = None,
    policy: RetryPolicy | None = None,
    exports_dir: Path | None = None,
    after_each: Callable[[Delivery, str], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> ProcessReport:
    """Process ready deliveries until the queue has none (or `max_deliveries` were claimed).

    `after_each(delivery, status)` runs after each delivery is finished (tests inject crashes).
    `stop()` is asked after each delivery: once it is true the rest of the batch is released
    unstarted (`crm-pipeline worker` on SIGTERM) and the report counts only what was started.
    """
    policy = policy or RetryPolicy()
    token = f"{run_id or 'run'}:{uuid.uuid4().hex[:12]}"
    report = ProcessReport()
    loaders = Loaders(run_id)
    while max_deliveries is None or report.claimed < max_deliveries:
        limit = (
            batch_size
            if max_deliveries is None
            else min(batch_size, max_deliveries - report.claimed)
        )
        batch = claim(engine, token=token, limit=limit, policy=policy)
        if not batch:
            break
        report.claimed += len(batch)
        ordered = sorted(batch, key=lambda d: d.order_key)
        for index, delivery in enumerate(ordered):
            status = _process_one(engine, delivery, token, loaders, policy, report, exports_dir)
            if after_each is not None:
                after_each(delivery, status)
            if stop is not None and stop():
                rest = ordered[index + 1 :]
                report.released = release(engine, rest, token)
                report.claimed -= len(rest)
                return report
        if stop is not None and stop():
            break
    return report


def _process_one(
    engine: sa.Engine,
    delivery: Delivery,
    token: str,
    loaders: Loaders,
    policy: RetryPolicy,
    report: ProcessReport,
    exports_dir: Path | None,
) -> str:
    if delivery.subject_key is None:
        delivery.subject_key = subject_key(delivery.source, delivery.topic, delivery.payload)
    if delivery.attempts > 1:
        report.retried_deliveries += 1
    error: str | None = None
    permanent = False
    retry_until: datetime | None = None
    try:
        with engine.begin() as conn:
            # names the path in the change log rows this transaction's writes record
            conn.execute(
                sa.text("SELECT set_config('crm.change_origin', :origin, true)"),
                {"origin": _ORIGINS.get(delivery.source, f"webhook:{delivery.source}")},
            )
            outcome = apply_delivery(
                conn, delivery, loaders, policy=policy, exports_dir=exports_dir
            )
            touched = sorted(t for t in outcome.touched if t)
            if touched:
                # recorded in the change log by the customers trigger, even when the handler
                # wrote nothing else the log watches
                conn.execute(
                    sa.text(
                        "UPDATE customers SET updated_at = now() "
                        "WHERE id = ANY(CAST(:ids AS uuid[]))"
                    ),
                    {"ids": touched},
                )
            mark_done(conn, delivery, token, outcome.outcome)
    except LostClaim:
        report.lost_claims += 1
        return "lost"
    except PermanentError as exc:
        error, permanent = f"permanent: {mask_pii(exc)}", True
    except UnknownSubject as exc:
        # retried until the grace ends (the backoff is capped at that time), then dead
        retry_until = delivery.received_at + policy.unknown_subject_grace
        permanent = datetime.now(UTC) >= retry_until
        error = f"unknown subject{' after grace period' if permanent else ''}: {mask_pii(exc)}"
    except Exception as exc:  # any other failure is retried with backoff, then dead-lettered
        error = f"{type(exc).__name__}: {mask_pii(exc)}"
        log.warning("webhook %s (%s) failed: %s", delivery.id, delivery.topic, error)
    if error is not None:
        status = mark_failed(
            engine,
            delivery,
            token,
            error,
            permanent=permanent,
            policy=policy,
            retry_until=retry_until,
        )
        if status == "dead":
            report.dead += 1
        else:
            report.retry_scheduled += 1
        if len(report.errors) < 20:
            report.errors.append(f"{delivery.id} {delivery.topic}: {error[:300]}")
        return status
    report.outcomes[outcome.outcome] += 1
    report.touched_customer_ids.update(t for t in outcome.touched if t)
    return "done"


__all__ = ["ProcessReport", "apply_delivery", "handler_for", "process_pending", "queue_stats"]
