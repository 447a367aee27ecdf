"""The webhook POST routes (docs/reference.md, routes): thin checks, then durable landing.

Order of checks for every delivery: size (413), signature (401), required headers and JSON (400),
for admin actions the action's model (422), rate limit (429), commit (200, or 503 when the
database cannot take it). Signatures come before everything that looks at content so unsigned
traffic never reaches the parser or the limiter's per-shop counters. Nothing about the
payload's people (emails, phones) is logged. Each sender's checks and rows are in rows/.

The three POST routes are served by `serve_delivery`, a plain ASGI handler that `ReceiverApp`
(main.py) calls before FastAPI's middleware, routing and dependency machinery: that machinery
cost more CPU per request than the checks and the durable landing together. The same routes are
still declared on the FastAPI router (same handler underneath) so the OpenAPI document describes
them and a mount under another prefix keeps working.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from webhook_receiver.answers import (
    ACCEPTED_ONE,
    DUPLICATE_ONE,
    Answer,
    Rejection,
    answer,
    rejected,
    signature_failed,
)
from webhook_receiver.asgi import (
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    receive_body,
    scope_headers,
)
from webhook_receiver.deps import ReceiverDep
from webhook_receiver.landing import DatabaseUnavailable, EventRow, RowRejected
from webhook_receiver.receiver import Receiver
from webhook_receiver.rows.admin import admin_rows
from webhook_receiver.rows.common import RowBuilder, rate_limit
from webhook_receiver.rows.klaviyo import klaviyo_rows
from webhook_receiver.rows.shopify import shopify_rows
from webhook_receiver.signatures import SignatureError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebhookRoute:
    """One POST route: its metrics source label and the function turning a request into rows."""

    source: str
    rows: RowBuilder


WEBHOOK_ROUTES: dict[str, WebhookRoute] = {
    "/webhooks/shopify": WebhookRoute("shopify", shopify_rows),
    "/webhooks/klaviyo": WebhookRoute("klaviyo", klaviyo_rows),
    "/webhooks/admin": WebhookRoute("manual", admin_rows),
}


async def land(receiver: Receiver, source: str, rows: list[EventRow]) -> Answer:
    """Commit rows, count them, and answer; 200 only after the commit."""
    started = time.perf_counter()
    lander = receiver.lander
    try:
        if len(rows) == 1:
            results = [await lander.land_one(rows[0])]
        else:
            results = await lander.land(rows) if rows else []
    except DatabaseUnavailable as exc:
        raise Rejection(
            503, "db_unavailable", "database unavailable, retry later", {"Retry-After": "5"}
        ) from exc
    except RowRejected as exc:
        raise Rejection(400, "unstorable", "payload cannot be stored") from exc
    metrics = receiver.metrics
    metrics.landing_by[source].observe(time.perf_counter() - started)
    stored = sum(results)
    duplicates = len(results) - stored
    if stored:
        metrics.received_by[source].inc(stored)
    if duplicates:
        metrics.duplicates_by[source].inc(duplicates)
    if len(results) == 1:
        return ACCEPTED_ONE if stored else DUPLICATE_ONE
    status = "duplicate" if rows and not stored else "accepted"
    return answer(200, {"status": status, "stored": stored, "duplicates": duplicates})


async def deliver(
    receiver: Receiver, route: WebhookRoute, headers: Headers, receive: Receive
) -> Answer:
    """Read, check and land one delivery; every refusal becomes an answer and a metric."""
    source = route.source
    try:
        body = await receive_body(
            receive, headers.get("content-length"), receiver.settings.max_body_bytes
        )
        rows = route.rows(receiver, headers, body)
        if receiver.limiter.enabled:
            await rate_limit(receiver, source, rows)
        return await land(receiver, source, rows)
    except Rejection as exc:
        receiver.metrics.rejected.labels(source, exc.reason).inc()
        if exc.status >= 500:
            log.warning("webhook %s: %s (%s)", source, exc.status, exc.reason)
        else:
            log.info("webhook %s rejected: %s (%s)", source, exc.status, exc.reason)
        return rejected(exc)
    except SignatureError as exc:
        receiver.metrics.rejected.labels(source, exc.reason).inc()
        log.info("webhook %s rejected: 401 (%s)", source, exc.reason)
        return answer(401, signature_failed(exc.reason))


_JSON_TYPE = (b"content-type", b"application/json")


async def serve_delivery(
    receiver: Receiver, route: WebhookRoute, scope: Scope, receive: Receive, send: Send
) -> None:
    """The ASGI handler of a webhook POST: no middleware, routing or dependency resolution."""
    try:
        answer = await deliver(receiver, route, scope_headers(scope), receive)
    except ClientGone:
        return  # nothing was landed; there is no one to answer
    headers = [_JSON_TYPE, (b"content-length", str(len(answer.body)).encode())]
    for name, value in answer.headers:
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


def header_parameters(*headers: str) -> list[dict[str, Any]]:
    """OpenAPI entries for headers the handler reads itself (not FastAPI parameters)."""
    return [
        {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
        for name in headers
    ]


def _openapi(*headers: str) -> dict[str, Any]:
    """Headers and body for the OpenAPI schema. The handler reads the raw request itself (the
    signature covers the exact bytes), so nothing here is a FastAPI parameter."""
    return {
        "parameters": header_parameters(*headers),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    }


_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Committed (or already stored: duplicate delivery)."},
    400: {"description": "Malformed body or missing headers; the sender's retry will not help."},
    401: {"description": "Missing or bad signature (or stale timestamp); nothing stored."},
    422: {"description": "Admin route: not a valid action (field errors given); nothing stored."},
    413: {"description": "Body over the size limit."},
    429: {"description": "Rate limited; see Retry-After."},
    503: {"description": "Database unavailable; nothing acknowledged, the sender retries."},
}

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


async def _through_fastapi(request: Request, receiver: Receiver, route: WebhookRoute) -> Response:
    """The same handler when a request reaches the FastAPI router (e.g. a mounted app)."""
    try:
        answer = await deliver(receiver, route, scope_headers(request.scope), request.receive)
    except ClientGone:
        return Response(status_code=400)
    return Response(answer.body, answer.status, dict(answer.headers), "application/json")


@router.post(
    "/shopify",
    responses=_ANSWERS,
    openapi_extra=_openapi(
        "X-Shopify-Hmac-Sha256",
        "X-Shopify-Webhook-Id",
        "X-Shopify-Topic",
        "X-Shopify-Shop-Domain",
        "X-Shopify-Triggered-At",
    ),
)
async def shopify_webhook(request: Request, receiver: ReceiverDep) -> Response:
    """A Shopify webhook delivery, keyed by X-Shopify-Webhook-Id."""
    return await _through_fastapi(request, receiver, WEBHOOK_ROUTES["/webhooks/shopify"])


@router.post(
    "/klaviyo",
    responses=_ANSWERS,
    openapi_extra=_openapi("Klaviyo-Signature", "Klaviyo-Timestamp", "Klaviyo-Webhook-Id"),
)
async def klaviyo_webhook(request: Request, receiver: ReceiverDep) -> Response:
    """A Klaviyo webhook delivery; one row per item, keyed by Klaviyo-Webhook-Id:<index>."""
    return await _through_fastapi(request, receiver, WEBHOOK_ROUTES["/webhooks/klaviyo"])


@router.post(
    "/admin",
    responses=_ANSWERS,
    openapi_extra=_openapi("X-Crm-Timestamp", "X-Crm-Hmac-Sha256"),
)
async def admin_webhook(request: Request, receiver: ReceiverDep) -> Response:
    """A staff action from the admin app (`action`, `action_id` in the signed body)."""
    return await _through_fastapi(request, receiver, WEBHOOK_ROUTES["/webhooks/admin"])
