"""HTTP routes of the receiver (CONTRACT.md section 4): thin checks, then durable landing.

Order of checks for every delivery: size (413), signature (401), required headers and JSON (400),
rate limit (429), commit (200, or 503 when the database cannot take it). Signatures come before
everything that looks at content so unsigned traffic never reaches the parser or the limiter's
per-shop counters. Nothing about the payload's people (emails, phones) is logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from webhook_receiver.landing import DatabaseUnavailable, EventRow, Lander, RowRejected
from webhook_receiver.metrics import ReceiverMetrics
from webhook_receiver.ratelimit import RateLimited, RateLimiter
from webhook_receiver.settings import WebhookSettings
from webhook_receiver.signatures import SignatureError, verify_base64, verify_klaviyo

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 255
MAX_KLAVIYO_ITEMS = 1000
# Never persisted: credentials a proxy might add in front of us.
_DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@dataclass
class Receiver:
    """What the routes share: settings, landing writer, rate limiter, metrics."""

    settings: WebhookSettings
    lander: Lander
    limiter: RateLimiter
    metrics: ReceiverMetrics


async def get_receiver(request: Request) -> Receiver:
    """Async on purpose: a sync dependency would cost a thread-pool hop on every request."""
    return request.app.state.receiver


ReceiverDep = Annotated[Receiver, Depends(get_receiver)]


class Rejection(Exception):
    """A delivery refused with an HTTP status; `reason` is the metrics label."""

    def __init__(
        self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers or {}


def _json(status: int, content: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


def rejection_response(exc: Rejection) -> Response:
    return _json(
        exc.status, {"status": "rejected", "reason": exc.reason, "detail": exc.detail}, exc.headers
    )


# ---------------------------------------------------------------------------- body and parsing
async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing early on Content-Length and again while streaming (chunked)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError as exc:
            raise Rejection(400, "malformed_body", "invalid Content-Length") from exc
        if too_big:
            raise Rejection(413, "too_large", f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejection(413, "too_large", f"body over {limit} bytes")
        chunks.append(chunk)
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


def parse_time(value: Any) -> datetime | None:
    """An event time from a header or payload (ISO 8601 or epoch seconds); None if unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            pass
    try:
        if isinstance(value, int | float):
            moment = datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC)
        else:
            moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if not 1970 <= moment.year <= 9999:
        return None
    return moment


def headers_json(request: Request) -> str:
    # No NUL check: the HTTP parser refuses NUL in header names and values.
    kept = {k: v for k, v in request.headers.items() if k not in _DROPPED_HEADERS}
    return orjson.dumps(kept).decode()


def _dig(payload: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


def _scalar_id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    text = str(value).replace("\x00", "").strip()
    return text if text and len(text) <= MAX_ID_LENGTH else None


def shopify_subject(topic: str, payload: Any) -> str | None:
    """'shopify:<customer id>' for customer and order topics, so processing can order per person."""
    if topic.startswith("customers/") or topic.startswith("customers_"):
        ident = _scalar_id(_dig(payload, "id"))
    elif topic.startswith(("orders/", "refunds/", "checkouts/")):
        ident = _scalar_id(_dig(payload, "customer", "id"))
    else:
        ident = _scalar_id(_dig(payload, "customer", "id"))
    return f"shopify:{ident}" if ident else None


def klaviyo_subject(item: Any) -> str | None:
    ident = _scalar_id(_dig(item, "relationships", "profile", "data", "id"))
    if ident is None and _dig(item, "type") == "profile":
        ident = _scalar_id(_dig(item, "id"))
    ident = ident or _scalar_id(_dig(item, "attributes", "profile_id"))
    return f"klaviyo:{ident}" if ident else None


def admin_subject(payload: Any) -> str | None:
    ident = _scalar_id(_dig(payload, "customer_id"))
    if ident:
        return f"crm:{ident}"
    ident = _scalar_id(_dig(payload, "shopify_customer_id"))
    return f"shopify:{ident}" if ident else None


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


# ---------------------------------------------------------------------------- landing
async def land(receiver: Receiver, source: str, rows: list[EventRow]) -> Response:
    """Commit rows, count them, and answer; 200 only after the commit."""
    started = time.perf_counter()
    try:
        results = await receiver.lander.land(rows) if rows else []
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
    status = "duplicate" if rows and not stored else "accepted"
    return _json(200, {"status": status, "stored": stored, "duplicates": duplicates})


def _rate_limit(receiver: Receiver, source: str, shop_domain: str | None = None) -> None:
    try:
        receiver.limiter.hit(source, shop_domain)
    except RateLimited as exc:
        raise Rejection(
            429, "rate_limited", str(exc), {"Retry-After": str(exc.retry_after)}
        ) from exc


async def guarded(receiver: Receiver, source: str, handler: Any) -> Response:
    """Run a delivery handler, turning Rejections into answers and rejection metrics."""
    try:
        return await handler
    except Rejection as exc:
        receiver.metrics.rejected.labels(source, exc.reason).inc()
        if exc.status >= 500:
            log.warning("webhook %s: %s (%s)", source, exc.status, exc.reason)
        else:
            log.info("webhook %s rejected: %s (%s)", source, exc.status, exc.reason)
        return rejection_response(exc)
    except SignatureError as exc:
        receiver.metrics.rejected.labels(source, exc.reason).inc()
        log.info("webhook %s rejected: 401 (%s)", source, exc.reason)
        return _json(
            401,
            {"status": "rejected", "reason": exc.reason, "detail": "signature verification failed"},
        )


# ---------------------------------------------------------------------------- routes


def _openapi(*headers: str) -> dict[str, Any]:
    """Headers and body for the OpenAPI schema. The routes read the raw request themselves
    (the signature covers the exact bytes), and FastAPI's per-request parameter machinery costs
    more than the whole durable landing, so nothing here is a FastAPI parameter."""
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
    413: {"description": "Body over the size limit."},
    429: {"description": "Rate limited; see Retry-After."},
    503: {"description": "Database unavailable; nothing acknowledged, the sender retries."},
}

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


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
    receiver: Receiver = request.app.state.receiver
    get = request.headers.get

    async def handle() -> Response:
        x_shopify_hmac_sha256 = get("x-shopify-hmac-sha256")
        x_shopify_webhook_id = get("x-shopify-webhook-id")
        x_shopify_topic = get("x-shopify-topic")
        x_shopify_shop_domain = get("x-shopify-shop-domain")
        x_shopify_triggered_at = get("x-shopify-triggered-at")
        body = await read_body(request, receiver.settings.max_body_bytes)
        verify_base64(body, x_shopify_hmac_sha256, receiver.settings.secret("shopify"))
        delivery_id = _text(x_shopify_webhook_id, "X-Shopify-Webhook-Id")
        topic = _text(x_shopify_topic, "X-Shopify-Topic")
        shop = _text(x_shopify_shop_domain, "X-Shopify-Shop-Domain")
        parsed = parse_json(body)
        _rate_limit(receiver, "shopify", shop)
        row = EventRow(
            source="shopify",
            topic=topic,  # type: ignore[arg-type]
            delivery_id=delivery_id,  # type: ignore[arg-type]
            shop_domain=shop,
            triggered_at=parse_time(x_shopify_triggered_at),
            headers_json=headers_json(request),
            payload_json=storable_json(body, parsed),
            subject_key=shopify_subject(topic or "", parsed),
        )
        return await land(receiver, "shopify", [row])

    return await guarded(receiver, "shopify", handle())


@router.post(
    "/klaviyo",
    responses=_ANSWERS,
    openapi_extra=_openapi("Klaviyo-Signature", "Klaviyo-Timestamp", "Klaviyo-Webhook-Id"),
)
async def klaviyo_webhook(request: Request) -> Response:
    """A Klaviyo webhook delivery; one row per item, keyed by Klaviyo-Webhook-Id:<index>."""
    receiver: Receiver = request.app.state.receiver
    get = request.headers.get

    async def handle() -> Response:
        klaviyo_signature = get("klaviyo-signature")
        klaviyo_timestamp = get("klaviyo-timestamp")
        klaviyo_webhook_id = get("klaviyo-webhook-id")
        settings = receiver.settings
        body = await read_body(request, settings.max_body_bytes)
        verify_klaviyo(
            body,
            klaviyo_signature,
            klaviyo_timestamp,
            settings.secret("klaviyo"),
            settings.klaviyo_tolerance_seconds,
        )
        webhook_id = _text(klaviyo_webhook_id, "Klaviyo-Webhook-Id")
        items = klaviyo_items(parse_json(body))
        _rate_limit(receiver, "klaviyo")
        sent_at = parse_time(klaviyo_timestamp)
        headers = headers_json(request)
        rows = []
        for index, item in enumerate(items):
            topic = _scalar_id(item.get("topic")) or _scalar_id(item.get("type")) or "unknown"
            happened = _dig(item, "attributes", "datetime") or _dig(item, "attributes", "timestamp")
            rows.append(
                EventRow(
                    source="klaviyo",
                    topic=topic,
                    delivery_id=f"{webhook_id}:{index}",
                    shop_domain=None,
                    triggered_at=parse_time(happened) or sent_at,
                    headers_json=headers,
                    payload_json=orjson.dumps(_strip_nul(item)).decode(),
                    subject_key=klaviyo_subject(item),
                )
            )
        return await land(receiver, "klaviyo", rows)

    return await guarded(receiver, "klaviyo", handle())


@router.post(
    "/admin",
    responses=_ANSWERS,
    openapi_extra=_openapi("X-Crm-Hmac-Sha256", "X-Crm-Action-Id", "X-Crm-Action"),
)
async def admin_webhook(request: Request) -> Response:
    """A staff action from the admin app, stored with source 'manual', keyed by X-Crm-Action-Id."""
    receiver: Receiver = request.app.state.receiver
    get = request.headers.get

    async def handle() -> Response:
        x_crm_hmac_sha256 = get("x-crm-hmac-sha256")
        x_crm_action_id = get("x-crm-action-id")
        x_crm_action = get("x-crm-action")
        body = await read_body(request, receiver.settings.max_body_bytes)
        verify_base64(body, x_crm_hmac_sha256, receiver.settings.secret("admin"))
        action_id = _text(x_crm_action_id, "X-Crm-Action-Id")
        parsed = parse_json(body)
        if not isinstance(parsed, dict):
            raise Rejection(400, "malformed_body", "an admin action must be a JSON object")
        topic = _text(x_crm_action or _scalar_id(parsed.get("action")), "X-Crm-Action or action")
        _rate_limit(receiver, "manual")
        row = EventRow(
            source="manual",
            topic=topic,  # type: ignore[arg-type]
            delivery_id=action_id,  # type: ignore[arg-type]
            shop_domain=None,
            triggered_at=parse_time(parsed.get("occurred_at") or parsed.get("triggered_at")),
            headers_json=headers_json(request),
            payload_json=storable_json(body, parsed),
            subject_key=admin_subject(parsed),
        )
        return await land(receiver, "manual", [row])

    return await guarded(receiver, "manual", handle())


ops_router = APIRouter(tags=["operations"])


@ops_router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@ops_router.get("/readyz", responses={503: {"description": "Database unreachable."}})
async def readyz(receiver: ReceiverDep) -> Response:
    """Readiness: the database answers within the timeout."""
    try:
        await receiver.lander.ping()
    except DatabaseUnavailable:
        return _json(503, {"status": "unavailable", "database": "unreachable"})
    return _json(200, {"status": "ready", "database": "ok"})


@ops_router.get("/metrics")
async def metrics(receiver: ReceiverDep) -> Response:
    """Prometheus text exposition."""
    return Response(receiver.metrics.render(), media_type=receiver.metrics.content_type)
