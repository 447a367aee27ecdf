"""The state of an admin action for GET /webhooks/admin/{action_id}, read from webhook_events.

The admin app asks whether a staff action it sent took effect. The state is derived from the
row's queue status; a failure's reason is a fixed category, never the stored error text (which
may quote a person's data from a database message). A status request is rare next to
deliveries, so each one opens its own short-lived connection instead of sharing the writers'.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from webhook_receiver.landing import DatabaseUnavailable

_QUERY = """
SELECT status, outcome, attempts, last_error, received_at, processed_at, next_attempt_at
FROM webhook_events WHERE source = 'manual' AND delivery_id = %s
"""
# webhook_events.status -> the state the admin app sees
_STATES = {
    "pending": "received",
    "processing": "received",
    "done": "applied",
    "failed": "failed",
    "dead": "dead",
}


def failure_reason(last_error: str | None) -> str:
    """A category for a failed or dead action, safe to show: no values from the payload."""
    error = last_error or ""
    if error.startswith("unknown subject"):
        return "customer_not_found"
    if error.startswith("permanent:"):
        return "invalid_action"
    if error.startswith("processing run died"):
        return "processing_crashed"
    return "processing_error"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass(frozen=True, slots=True)
class ActionState:
    """One admin action's state as answered to the admin app."""

    action_id: str
    state: str
    outcome: str | None
    attempts: int
    reason: str | None
    received_at: datetime
    processed_at: datetime | None
    next_attempt_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "action_id": self.action_id,
            "state": self.state,
            "attempts": self.attempts,
            "received_at": _iso(self.received_at),
        }
        if self.state == "applied":
            answer["outcome"] = self.outcome
            answer["processed_at"] = _iso(self.processed_at)
        if self.reason is not None:
            answer["reason"] = self.reason
        if self.state == "failed":
            answer["next_attempt_at"] = _iso(self.next_attempt_at)
        return answer


class ActionStatus:
    """Looks admin actions up by action_id (webhook_events.delivery_id of source 'manual')."""

    def __init__(self, dsn: str, timeout_seconds: float = 2.0) -> None:
        self.dsn = dsn
        self.timeout = timeout_seconds

    async def lookup(self, action_id: str) -> ActionState | None:
        """The action's state, None if it was never received; DatabaseUnavailable -> 503."""
        try:
            async with asyncio.timeout(self.timeout):
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, connect_timeout=max(2, int(self.timeout)), autocommit=True
                )
                async with conn:
                    cur = await conn.execute(_QUERY, (action_id.replace("\x00", ""),))
                    row = await cur.fetchone()
        except (TimeoutError, psycopg.Error, OSError) as exc:
            raise DatabaseUnavailable("database unavailable") from exc
        if row is None:
            return None
        status, outcome, attempts, last_error, received, processed, next_attempt = row
        state = _STATES.get(status, "received")
        return ActionState(
            action_id=action_id,
            state=state,
            outcome=outcome,
            attempts=attempts,
            reason=failure_reason(last_error) if state in ("failed", "dead") else None,
            received_at=received,
            processed_at=processed,
            next_attempt_at=next_attempt,
        )
