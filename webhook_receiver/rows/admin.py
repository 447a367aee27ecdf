"""Rows of an admin app staff action (docs/reference.md, routes, `POST /webhooks/admin`)."""

from __future__ import annotations

from crm_pipeline.normalize import parse_instant
from crm_pipeline.webhooks.admin_schema import InvalidAdminAction, parse_admin_action
from crm_pipeline.webhooks.subjects import subject_key
from webhook_receiver.answers import Rejection
from webhook_receiver.asgi import Headers
from webhook_receiver.landing import EventRow
from webhook_receiver.receiver import Receiver
from webhook_receiver.rows.common import headers_json, parse_json, storable_json
from webhook_receiver.signatures import verify_admin


def admin_rows(receiver: Receiver, headers: Headers, body: bytes) -> list[EventRow]:
    """A staff action from the admin app, stored with source 'manual', keyed by its action_id.

    Everything that decides the effect (action, action_id, the customer, the fields) is in the
    signed body; the signature also covers X-Crm-Timestamp, so a captured request can neither
    be edited, relabelled nor replayed after the window. The body must be a valid action
    (admin_schema, the models the processor applies) or it is 422 and nothing is stored.
    """
    get = headers.get
    verify_admin(body, get("x-crm-hmac-sha256"), get("x-crm-timestamp"), receiver.secrets["admin"])
    parsed = parse_json(body)
    try:
        action = parse_admin_action(parsed)
    except InvalidAdminAction as exc:
        raise Rejection(
            422, "invalid_action", "not a valid admin action", errors=exc.errors
        ) from exc
    return [
        EventRow(
            source="manual",
            topic=action.action,
            delivery_id=action.action_id,
            shop_domain=None,
            triggered_at=parse_instant(action.occurred_at),
            headers_json=headers_json(headers),
            payload_json=storable_json(body, parsed),
            subject_key=subject_key("manual", action.action, parsed),
        )
    ]
