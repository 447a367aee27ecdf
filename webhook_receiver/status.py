"""The state of an admin action for GET /webhooks/admin/{action_id}, read from webhook_events.

The admin app asks whether a staff action it sent took effect. The state is derived from the
row's queue status by crm_pipeline.webhooks.action_state (shared with the worker's Firestore
admin_actions documents). A status request is rare next to deliveries, so each one opens its own
short-lived connection instead of sharing the writers'.
"""

from __future__ import annotations

import asyncio

import psycopg

from crm_pipeline.webhooks.action_state import STATES as STATES
from crm_pipeline.webhooks.action_state import ActionState as ActionState
from crm_pipeline.webhooks.action_state import failure_reason as failure_reason
from webhook_receiver.landing import DatabaseUnavailable

_QUERY = """
SELECT status, outcome, attempts, last_error, received_at, processed_at, next_attempt_at
FROM webhook_events WHERE source = 'manual' AND delivery_id = %s
"""


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
        return ActionState.from_row(action_id, *row)
