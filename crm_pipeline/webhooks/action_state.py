"""An admin action's state as the admin app sees it, derived from its webhook_events row.

One definition for both places the app reads it: the receiver's GET /webhooks/admin/{action_id}
and the Firestore document admin_actions/{action_id} the worker writes. A failure's reason is a
fixed category, never the stored error text (which may quote a person's data from a database
message). Kept free of SQLAlchemy: the receiver imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# webhook_events.status -> the state the admin app sees
STATES = {
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

    @classmethod
    def from_row(
        cls,
        action_id: str,
        status: str,
        outcome: str | None,
        attempts: int,
        last_error: str | None,
        received_at: datetime,
        processed_at: datetime | None,
        next_attempt_at: datetime | None,
    ) -> ActionState:
        """The state of a webhook_events row (status, outcome, ... as stored)."""
        state = STATES.get(status, "received")
        return cls(
            action_id=action_id,
            state=state,
            outcome=outcome,
            attempts=attempts,
            reason=failure_reason(last_error) if state in ("failed", "dead") else None,
            received_at=received_at,
            processed_at=processed_at,
            next_attempt_at=next_attempt_at,
        )

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
