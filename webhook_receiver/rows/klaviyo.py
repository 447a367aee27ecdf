"""Rows of a Klaviyo webhook delivery (docs/reference.md, routes, `POST /webhooks/klaviyo`):
one row per item, so a batch of events lands as separately processable rows."""

from __future__ import annotations

from typing import Any

import orjson

from crm_pipeline.normalize import parse_instant
from crm_pipeline.webhooks.subjects import dig, scalar_id, subject_key
from webhook_receiver.answers import Rejection
from webhook_receiver.asgi import Headers
from webhook_receiver.landing import EventRow
from webhook_receiver.receiver import Receiver
from webhook_receiver.rows.common import (
    header_text,
    headers_json,
    parse_json,
    strip_nul,
)
from webhook_receiver.signatures import verify_klaviyo

MAX_KLAVIYO_ITEMS = 1000


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
    webhook_id = header_text(get("klaviyo-webhook-id"), "Klaviyo-Webhook-Id")
    items = klaviyo_items(parse_json(body))
    sent_at = parse_instant(timestamp)
    stored_headers = headers_json(headers)
    rows: list[EventRow] = []
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
                payload_json=orjson.dumps(strip_nul(item)).decode(),
                subject_key=subject_key("klaviyo", topic, item),
            )
        )
    return rows
