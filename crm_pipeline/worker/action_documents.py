"""Mirror admin actions' states to Firestore `admin_actions/{action_id}` for the app to listen on.

The document has the shape GET /webhooks/admin/{action_id} answers (crm_pipeline.webhooks
.action_state), plus the action's name and when the document was written. The worker writes it
after the customer's own document, so an app that sees "applied" reads the updated customer.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.webhooks.action_state import ActionState

COLLECTION = "admin_actions"
_MAX_BATCH = 500  # Firestore's limit of writes per commit

_ROWS = sa.text(
    "SELECT delivery_id, topic, status, outcome, attempts, last_error, received_at, "
    "processed_at, next_attempt_at FROM webhook_events "
    "WHERE source = 'manual' AND id = ANY(:ids)"
)


def mirror_action_states(
    engine: sa.Engine, client: firestore.Client, delivery_ids: Iterable[int]
) -> int:
    """Write the current state of these webhook_events rows (admin actions only); returns count."""
    ids = sorted(set(delivery_ids))
    if not ids:
        return 0
    with engine.connect() as conn:
        rows = conn.execute(_ROWS, {"ids": ids}).all()
    now = datetime.now(UTC)
    for start in range(0, len(rows), _MAX_BATCH):
        batch = client.batch()
        for row in rows[start : start + _MAX_BATCH]:
            state = ActionState.from_row(
                row.delivery_id,
                row.status,
                row.outcome,
                row.attempts,
                row.last_error,
                row.received_at,
                row.processed_at,
                row.next_attempt_at,
            )
            document = {**state.as_json(), "action": row.topic, "updated_at": now}
            batch.set(client.collection(COLLECTION).document(row.delivery_id), document)
        batch.commit(timeout=30)
    return len(rows)
