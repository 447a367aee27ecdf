"""`GET /webhooks/admin/{action_id}` (docs/reference.md, routes): where a staff action is.

Signed like the POST (the signature covers `GET /webhooks/admin/{action_id}` and the
timestamp); the state comes from webhook_events through `status.ActionStatus`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from webhook_receiver.answers import json_response, signature_failed
from webhook_receiver.deps import ReceiverDep
from webhook_receiver.landing import DatabaseUnavailable
from webhook_receiver.routes.webhooks import header_parameters
from webhook_receiver.signatures import SignatureError, verify_admin

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.get(
    "/admin/{action_id:path}",
    responses={
        200: {"description": "The action's state: received, applied, failed (reason), dead."},
        401: {"description": "Missing or bad signature, or stale timestamp."},
        404: {"description": "No action with this id was received."},
        503: {"description": "Database unavailable; ask again later."},
    },
    openapi_extra={"parameters": header_parameters("X-Crm-Timestamp", "X-Crm-Hmac-Sha256")},
)
async def admin_action_status(action_id: str, request: Request, receiver: ReceiverDep) -> Response:
    """Where an admin action is: signed like the POST, over `GET /webhooks/admin/{action_id}`."""
    get = request.headers.get
    try:
        verify_admin(
            f"GET /webhooks/admin/{action_id}".encode(),
            get("x-crm-hmac-sha256"),
            get("x-crm-timestamp"),
            receiver.secrets["admin"],
        )
    except SignatureError as exc:
        receiver.metrics.rejected.labels("manual", exc.reason).inc()
        return json_response(401, signature_failed(exc.reason))
    try:
        state = await receiver.statuses.lookup(action_id)
    except DatabaseUnavailable:
        return json_response(503, {"status": "unavailable"}, {"Retry-After": "5"})
    if state is None:
        return json_response(404, {"status": "unknown", "action_id": action_id})
    return json_response(200, state.as_json())
