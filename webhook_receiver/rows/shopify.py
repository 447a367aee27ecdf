"""Rows of a Shopify webhook delivery (docs/reference.md, routes, `POST /webhooks/shopify`)."""

from __future__ import annotations

from crm_pipeline.normalize import parse_instant
from crm_pipeline.webhooks.subjects import subject_key
from webhook_receiver.asgi import Headers
from webhook_receiver.landing import EventRow
from webhook_receiver.receiver import Receiver
from webhook_receiver.rows.common import (
    header_text,
    headers_json,
    parse_json,
    storable_json,
)
from webhook_receiver.signatures import verify_base64


def shopify_rows(receiver: Receiver, headers: Headers, body: bytes) -> list[EventRow]:
    """A Shopify webhook delivery, keyed by X-Shopify-Webhook-Id."""
    get = headers.get
    verify_base64(body, get("x-shopify-hmac-sha256"), receiver.secrets["shopify"])
    delivery_id = header_text(get("x-shopify-webhook-id"), "X-Shopify-Webhook-Id")
    topic = header_text(get("x-shopify-topic"), "X-Shopify-Topic")
    shop = header_text(get("x-shopify-shop-domain"), "X-Shopify-Shop-Domain")
    parsed = parse_json(body)
    return [
        EventRow(
            source="shopify",
            topic=topic,
            delivery_id=delivery_id,
            shop_domain=shop,
            triggered_at=parse_instant(get("x-shopify-triggered-at")),
            headers_json=headers_json(headers),
            payload_json=storable_json(body, parsed),
            subject_key=subject_key("shopify", topic or "", parsed),
        )
    ]
