"""Helpers for the processing tests: land deliveries as the receiver would, build payloads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.webhooks import RetryPolicy, process_pending
from crm_pipeline.webhooks.processor import ProcessReport

BASE = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
# fast retries so tests can watch a delivery go failed -> dead without waiting
FAST = RetryPolicy(
    base_delay=timedelta(0), max_delay=timedelta(0), lease_timeout=timedelta(minutes=5)
)


def at(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


def land(
    engine: sa.Engine,
    source: str,
    topic: str,
    payload: Any,
    *,
    delivery_id: str | None = None,
    triggered_at: datetime | None = None,
    subject_key: str | None = None,
    shop_domain: str | None = "test-shop.myshopify.com",
) -> int | None:
    """Insert a delivery like the receiver (a duplicate delivery id stores nothing)."""
    with engine.begin() as conn:
        return conn.execute(
            sa.text(
                "INSERT INTO webhook_events (source, topic, delivery_id, shop_domain, "
                "triggered_at, headers, payload, subject_key) VALUES (:source, :topic, :did, "
                ":shop, :at, CAST(:headers AS jsonb), CAST(:payload AS jsonb), :subject) "
                "ON CONFLICT (source, delivery_id) DO NOTHING RETURNING id"
            ),
            {
                "source": source,
                "topic": topic,
                "did": delivery_id or str(uuid.uuid4()),
                "shop": shop_domain,
                "at": triggered_at,
                "headers": orjson.dumps({"x-shopify-topic": topic}).decode(),
                "payload": orjson.dumps(payload, default=str).decode(),
                "subject": subject_key,
            },
        ).scalar_one_or_none()


def shopify_customer(ident: int, updated: datetime, **fields: Any) -> dict[str, Any]:
    """A Shopify customer in the REST (2024-10) webhook shape."""
    record = {
        "id": ident,
        "email": f"person{ident}@example.com",
        "first_name": f"First{ident}",
        "last_name": f"Last{ident}",
        "phone": None,
        "state": "enabled",
        "tags": "",
        "note": None,
        "created_at": (BASE - timedelta(days=30)).isoformat(),
        "updated_at": updated.isoformat(),
        "addresses": [],
    }
    record.update(fields)
    return record


def run(engine: sa.Engine, **kwargs: Any) -> ProcessReport:
    kwargs.setdefault("policy", FAST)
    return process_pending(engine, **kwargs)


def statuses(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(
            conn.execute(sa.text("SELECT status, count(*) FROM webhook_events GROUP BY 1")).all()
        )


def customer_by_shopify_id(engine: sa.Engine, ident: int | str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT c.* FROM customers c JOIN customer_sources s ON s.customer_id = c.id "
                "WHERE s.source = 'shopify' AND s.external_id = :ext"
            ),
            {"ext": str(ident)},
        ).one_or_none()
