"""Signed requests for the receiver tests: the three senders' schemes with known test secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from webhook_receiver.signatures import sign_base64, sign_klaviyo

SHOPIFY_SECRET = "test-shopify-secret-0123456789"
KLAVIYO_SECRET = "test-klaviyo-secret-0123456789"
ADMIN_SECRET = "test-admin-secret-0123456789"
SECRET_ENV = {
    "SHOPIFY_WEBHOOK_SECRET": SHOPIFY_SECRET,
    "KLAVIYO_WEBHOOK_SECRET": KLAVIYO_SECRET,
    "ADMIN_WEBHOOK_SECRET": ADMIN_SECRET,
}


def shopify_request(
    payload: Any = None,
    *,
    webhook_id: str | None = None,
    topic: str = "customers/update",
    shop: str = "test-shop.myshopify.com",
    secret: str = SHOPIFY_SECRET,
    body: bytes | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a correctly signed Shopify delivery."""
    if body is None:
        body = json.dumps(payload if payload is not None else {"id": 42, "email": "x@y.z"}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Hmac-Sha256": sign_base64(body, secret.encode()),
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Triggered-At": "2024-10-01T12:00:00.123456789Z",
    }
    return body, headers


def klaviyo_request(
    payload: Any,
    *,
    webhook_id: str | None = None,
    timestamp: float | None = None,
    secret: str = KLAVIYO_SECRET,
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    stamp = str(int(time.time() if timestamp is None else timestamp))
    headers = {
        "Content-Type": "application/json",
        "Klaviyo-Signature": sign_klaviyo(body, stamp, secret.encode()),
        "Klaviyo-Timestamp": stamp,
        "Klaviyo-Webhook-Id": webhook_id or str(uuid.uuid4()),
    }
    return body, headers


def admin_signature_headers(
    message: bytes, *, timestamp: float | None = None, secret: str = ADMIN_SECRET
) -> dict[str, str]:
    """X-Crm-Timestamp and X-Crm-Hmac-Sha256 over `timestamp + "." + message` (docs/reference.md
    section 4, computed here rather than with the receiver's own helper)."""
    stamp = str(int(time.time() if timestamp is None else timestamp))
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + message, hashlib.sha256).digest()
    return {"X-Crm-Timestamp": stamp, "X-Crm-Hmac-Sha256": base64.b64encode(digest).decode()}


def admin_request(
    payload: dict[str, Any],
    *,
    action_id: str | None = None,
    action: str | None = None,
    timestamp: float | None = None,
    secret: str = ADMIN_SECRET,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a signed admin action; `action`/`action_id` go into the body."""
    document = dict(payload)
    if action is not None:
        document["action"] = action
    document.setdefault("action_id", action_id or str(uuid.uuid4()))
    body = json.dumps(document).encode()
    headers = {
        "Content-Type": "application/json",
        **admin_signature_headers(body, timestamp=timestamp, secret=secret),
    }
    return body, headers


def admin_status_headers(action_id: str, *, timestamp: float | None = None) -> dict[str, str]:
    """Signed headers of GET /webhooks/admin/{action_id}."""
    return admin_signature_headers(f"GET /webhooks/admin/{action_id}".encode(), timestamp=timestamp)
