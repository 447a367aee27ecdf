"""HTTP routes of the receiver (CONTRACT.md section 4): thin checks, then durable landing.

Order of checks for every delivery: size (413), signature (401), required headers and JSON (400),
for admin actions the action's model (422), rate limit (429), commit (200, or 503 when the
database cannot take it). Signatures come before everything that looks at content so unsigned
traffic never reaches the parser or the limiter's per-shop counters. Nothing about the
payload's people (emails, phones) is logged. `GET /webhooks/admin/{action_id}` answers an admin
action's state.

The three POST routes are served by `serve_delivery`, a plain ASGI handler that `ReceiverApp`
(main.py) calls before FastAPI's middleware, routing and dependency machinery: that machinery
cost more CPU per request than the checks and the durable landing together. The same routes are
still declared on the FastAPI router (same handler underneath) so the OpenAPI document describes
them and a mount under another prefix keeps working.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from crm_pipeline.normalize import parse_instant
from crm_pipeline.webhooks.admin_schema import InvalidAdminAction, parse_admin_action
from crm_pipeline.webhooks.subjects import dig, scalar_id, subject_key
from webhook_receiver.landing import DatabaseUnavailable, EventRow, Lander, RowRejected
from webhook_receiver.metrics import ReceiverMetrics
from webhook_receiver.ratelimit import RateLimited, RateLimiter
from webhook_receiver.settings import WebhookSettings
from webhook_receiver.signatures import (
    SignatureError,
    verify_admin,
    verify_base64,
    verify_klaviyo,
)
from webhook_receiver.status import ActionStatus

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 255
MAX_KLAVIYO_ITEMS = 1000
# Never persisted: credentials a proxy might add in front of us.
_DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

Headers = dict[str, str]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Receiver:
    """What the routes share: settings, landing writer, rate limiter, metrics."""

    settings: WebhookSettings
    lander: Lander
    limiter: RateLimiter
    metrics: ReceiverMetrics
    statuses: ActionStatus
    # Secrets as bytes, read once: pydantic's SecretStr unwrapping is not free per request.
    secrets: dict[str, bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.secrets = {
            name: self.settings.secret(name) for name in ("shopify", "klaviyo", "admin")
        }


class Rejection(Exception):
    """A delivery refused with an HTTP status; `reason` is the metrics label."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Answer:
    """Status, JSON body and extra headers of a delivery's answer, independent of the framework."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _answer(status: int, content: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, orjson.dumps(content), tuple((headers or {}).items()))


def _rejected(exc: Rejection) -> Answer:
    content: dict[str, Any] = {"status": "rejected", "reason": exc.reason, "detail": exc.detail}
    if exc.errors is not None:
        content["errors"] = exc.errors
    return _answer(exc.status, content, exc.headers)


def _json(status: int, content: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


# The two everyday answers, built once.
_ACCEPTED_ONE = _answer(200, {"status": "accepted", "stored": 1, "duplicates": 0})
_DUPLICATE_ONE = _answer(200, {"status": "duplicate", "stored": 0, "duplicates": 1})


# ---------------------------------------------------------------------------- body and parsing
def scope_headers(scope: Scope) -> Headers:
    """The request headers as a dict (lower-case names, latin-1 like Starlette; last one wins)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class ClientGone(Exception):
    """The client disconnected before sending the whole body: nothing to answer."""


async def receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The raw body, refusing early on Content-Length and again while streaming (chunked)."""
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError as exc:
            raise Rejection(400, "malformed_body", "invalid Content-Length") from exc
        if too_big:
            raise Rejection(413, "too_large", f"body over {limit} bytes")
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: one message, no copy
        if len(body) > limit:
            raise Rejection(413, "too_large", f"body over {limit} bytes")
        return body
    chunks = [body]
    size = len(body)
    while True:
        if size > limit:
            raise Rejection(413, "too_large", f"body over {limit} bytes")
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if size > limit:
        raise Rejection(413, "too_large", f"body over {limit} bytes")
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "malformed_body", "body is not valid JSON") from exc


def _strip_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000; drop it rather than lose the delivery."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    if isinstance(value, dict):
        return {_strip_nul(k): _strip_nul(v) for k, v in value.items()}
    return value


def storable_json(body: bytes, parsed: Any) -> str:
    """The payload text for jsonb: the raw body itself unless it needs cleaning."""
    if b"\\u0000" in body:
        return orjson.dumps(_strip_nul(parsed)).decode()
    return body.decode()


def _text(value: Any, name: str, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            raise Rejection(400, "missing_headers", f"missing {name}")
        return None
    text = str(value).replace("\x00", "").strip()
    if len(text) > MAX_ID_LENGTH:
        raise Rejection(400, "malformed_headers", f"{name} longer than {MAX_ID_LENGTH}")
    if required and not text:
        raise Rejection(400, "missing_headers", f"missing {name}")
    return text or None


def headers_json(headers: Headers) -> str:
    """The request headers as stored (credentials a proxy might add are never persisted)."""
    # No NUL check: the HTTP parser refuses NUL in header names and values.
    if _DROPPED_HEADERS.isdisjoint(headers):
        return orjson.dumps(headers).decode()
    return orjson.dumps({k: v for k, v in headers.items() if k not in _DROPPED_HEADERS}).decode()


def klaviyo_items(parsed: Any) -> list[dict[str, Any]]:
    """The events of a Klaviyo delivery: `{"data": [...]}`, `{"data": {...}}`, a list or one."""
    if isinstance(parsed, dict) and "data" in parsed:
        data = parsed["data"]
        items = data if isinstance(data, list) else [data]
    elif isinstance(parsed, list):
        items = parsed
    else:
        items = [parsed]
    if len(items) > MAX_KLAVIYO_ITEMS:
        raise Rejection(413, "too_large", f"more than {MAX_KLAVIYO_ITEMS} items")
    if not all(isinstance(item, dict) for item in items):
        raise Rejection(400, "malformed_body", "every Klaviyo item must be a JSON object")
    return items


# ---------------------------------------------------------------------------- per-sender rows
def _rate_limit(receiver: Receiver, source: str, shop_domain: str | None = None) -> None:
    try:
        receiver.limiter.hit(source, shop_domain)
    except RateLimited as exc:
        raise Rejection(
            429, "rate_limited", str(exc), {"Retry-After": str(exc.retry_after)}
        ) from exc


def shopify_rows(receiver: Receiver, headers: Headers, body: bytes) -> list[EventRow]:
    """A Shopify webhook delivery, keyed by X-Shopify-Webhook-Id."""
    get = headers.get
    verify_base64(body, get("x-shopify-hmac-sha256"), receiver.secrets["shopify"])
    delivery_id = _text(get("x-shopify-webhook-id"), "X-Shopify-Webhook-Id")
    topic = _text(get("x-shopify-topic"), "X-Shopify-Topic")
    shop = _text(get("x-shopify-shop-domain"), "X-Shopify-Shop-Domain")
    parsed = parse_json(body)
    _rate_limit(receiver, "shopify", shop)
    return [
        EventRow(
            source="shopify",
            topic=topic,  # type: ignore[arg-type]
            delivery_id=delivery_id,  # type: ignore[arg-type]
            shop_domain=shop,
            triggered_at=parse_instant(get("x-shopify-triggered-at")),
            headers_json=headers_json(headers),
            payload_json=storable_json(body, parsed),
            subject_key=subject_key("shopify", topic or "", parsed),
        )
    ]


def klaviyo_rows(receiver: Receiver, headers: Headers, body: bytes) -> list[EventRow]:
    """A Klaviyo webhook delivery; one row per item, keyed by Klaviyo-Webhook-Id:<index>."""
    get = headers.get
    timestamp = get("klaviyo-timestamp")
    settings = receiver.settings
    verify_klaviyo(
        body,
        get("klaviyo-signature"),
        timestamp,
        receiver.secrets["klaviyo"],
        settings.klaviyo_tolerance_seconds,
    )
    webhook_id = _text(get("klaviyo-webhook-id"), "Klaviyo-Webhook-Id")
    items = klaviyo_items(parse_json(body))
    _rate_limit(receiver, "klaviyo")
    sent_at = parse_instant(timestamp)
    stored_headers = headers_json(headers)
    rows = []
    for index, item in enumerate(items):
        topic = scalar_id(item.get("topic")) or scalar_id(item.get("type")) or "unknown"
        happened = dig(item, "attributes", "datetime") or dig(item, "attributes", "timestamp")
        rows.append(
            EventRow(
                source="klaviyo",
                topic=topic,
                delivery_id=f"{webhook_id}:{index}",
                shop_domain=None,
                triggered_at=parse_instant(happened) or sent_at,
                headers_json=stored_headers,
                payload_json=orjson.dumps(_strip_nul(item)).decode(),
                subject_key=subject_key("klaviyo", topic, item),
            )
        )
    return rows


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
    _rate_limit(receiver, "manual")
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


@dataclass(frozen=True, slots=True)
class WebhookRoute:
    """One POST route: its metrics source label and the function turning a request into rows."""

    source: str
    rows: Callable[[Receiver, Headers, bytes], list[EventRow]]


WEBHOOK_ROUTES: dict[str, WebhookRoute] = {
    "/webhooks/shopify": WebhookRoute("shopify", shopify_rows),
    "/webhooks/klaviyo": WebhookRoute("klaviyo", klaviyo_rows),
    "/webhooks/admin": WebhookRoute("manual", admin_rows),
}


# ---------------------------------------------------------------------------- landing
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
        return _ACCEPTED_ONE if stored else _DUPLICATE_ONE
    status = "duplicate" if rows and not stored else "accepted"
    return _answer(200, {"status": status, "stored": stored, "duplicates": duplicates})


async def deliver(
    receiver: Receiver, route: WebhookRoute, headers: Headers, receive: Receive
) -> Answer:
    """Read, check and land one delivery; every refusal becomes an answer and a metric."""
    source = route.source
    try:
        body = await receive_body(
            receive, headers.get("content-length"), receiver.settings.max_body_bytes
        )
        return await land(receiver, source, route.rows(receiver, headers, body))
    except Rejection as exc:
        receiver.metrics.rejected.labels(source, exc.reason).inc()
        if exc.status >= 500:
            log.warning("webhook %s: %s (%s)", source, exc.status, exc.reason)
        else:
            log.info("webhook %s rejected: %s (%s)", source, exc.status, exc.reason)
        return _rejected(exc)
    except SignatureError as exc:
        receiver.metrics.rejected.labels(source, exc.reason).inc()
        log.info("webhook %s rejected: 401 (%s)", source, exc.reason)
        return _answer(
            401,
            {"status": "rejected", "reason": exc.reason, "detail": "signature verification failed"},
        )


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


# ---------------------------------------------------------------------------- FastAPI routes
def _openapi(*headers: str) -> dict[str, Any]:
    """Headers and body for the OpenAPI schema. The handler reads the raw request itself (the
    signature covers the exact bytes), so nothing here is a FastAPI parameter."""
    return {
        "parameters": [
            {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
            for name in headers
        ],
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


async def _through_fastapi(request: Request, route: WebhookRoute) -> Response:
    """The same handler when a request reaches the FastAPI router (e.g. a mounted app)."""
    receiver: Receiver = request.app.state.receiver
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
async def shopify_webhook(request: Request) -> Response:
    """A Shopify webhook delivery, keyed by X-Shopify-Webhook-Id."""
    return await _through_fastapi(request, WEBHOOK_ROUTES["/webhooks/shopify"])


@router.post(
    "/klaviyo",
    responses=_ANSWERS,
    openapi_extra=_openapi("Klaviyo-Signature", "Klaviyo-Timestamp", "Klaviyo-Webhook-Id"),
)
async def klaviyo_webhook(request: Request) -> Response:
    """A Klaviyo webhook delivery; one row per item, keyed by Klaviyo-Webhook-Id:<index>."""
    return await _through_fastapi(request, WEBHOOK_ROUTES["/webhooks/klaviyo"])


@router.post(
    "/admin",
    responses=_ANSWERS,
    openapi_extra=_openapi("X-Crm-Timestamp", "X-Crm-Hmac-Sha256"),
)
async def admin_webhook(request: Request) -> Response:
    """A staff action from the admin app (`action`, `action_id` in the signed body)."""
    return await _through_fastapi(request, WEBHOOK_ROUTES["/webhooks/admin"])


@router.get(
    "/admin/{action_id:path}",
    responses={
        200: {"description": "The action's state: received, applied, failed (reason), dead."},
        401: {"description": "Missing or bad signature, or stale timestamp."},
        404: {"description": "No action with this id was received."},
        503: {"description": "Database unavailable; ask again later."},
    },
    openapi_extra={
        "parameters": [
            {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
            for name in ("X-Crm-Timestamp", "X-Crm-Hmac-Sha256")
        ]
    },
)
async def admin_action_status(action_id: str, request: Request) -> Response:
    """Where an admin action is: signed like the POST, over `GET /webhooks/admin/{action_id}`."""
    receiver: Receiver = request.app.state.receiver
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
        return _json(
            401,
            {"status": "rejected", "reason": exc.reason, "detail": "signature verification failed"},
        )
    try:
        state = await receiver.statuses.lookup(action_id)
    except DatabaseUnavailable:
        return _json(503, {"status": "unavailable"}, {"Retry-After": "5"})
    if state is None:
        return _json(404, {"status": "unknown", "action_id": action_id})
    return _json(200, state.as_json())


ops_router = APIRouter(tags=["operations"])


@ops_router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@ops_router.get("/readyz", responses={503: {"description": "Database unreachable."}})
async def readyz(request: Request) -> Response:
    """Readiness: the database answers within the timeout."""
    receiver: Receiver = request.app.state.receiver
    try:
        await receiver.lander.ping()
    except DatabaseUnavailable:
        return _json(503, {"status": "unavailable", "database": "unreachable"})
    return _json(200, {"status": "ready", "database": "ok"})


@ops_router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    receiver: Receiver = request.app.state.receiver
    return Response(receiver.metrics.render(), media_type=receiver.metrics.content_type)
