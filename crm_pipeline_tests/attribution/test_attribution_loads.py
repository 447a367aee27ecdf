"""What the order loader writes to order_attributions: a REST webhook payload (no journey field)
never wipes a journey already known, and a journey that changes is written again."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from crm_pipeline.ingest.orders import OrderLoader
from crm_pipeline.mapping.shopify import map_order

VISIT = {"id": 1, "occurred_at": "2026-11-01T10:00:00Z", "source": "google", "source_type": "SEO",
         "landing_page": "https://shop.example/p?email=x@y.z", "referrer_url": None,
         "utm_parameters": None, "marketing_event": None}  # fmt: skip


def _order(updated: str, **extra: Any) -> dict[str, Any]:
    return {"id": 77, "email": "a@example.com", "created_at": "2026-11-01T10:05:00Z",
            "updated_at": updated, "financial_status": "paid", "total_price": "20.00",
            "currency": "USD", "source_name": "web",
            "line_items": [{"id": 1, "title": "T", "quantity": 1, "price": "20.00"}],
            "refunds": [], **extra}  # fmt: skip


def _row(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(
            "SELECT journey_status, first_channel, last_channel, first_landing_page "
            "FROM order_attributions")).mappings().one())  # fmt: skip


def test_webhook_payloads_keep_known_journeys_and_changes_are_written(clean_db: sa.Engine) -> None:
    def load(raw: dict[str, Any]) -> None:
        OrderLoader(clean_db, origin="api pull").load([map_order(raw)])

    load(_order("2026-11-01T10:06:00Z", customer_journey_summary={"ready": False}))
    assert _row(clean_db)["journey_status"] == "not_ready"
    journey = {"ready": True, "first_visit": VISIT, "last_visit": VISIT}
    load(_order("2026-11-01T10:07:00Z", customer_journey_summary=journey))
    assert _row(clean_db) == {"journey_status": "ready", "first_channel": "organic_search",
                              "last_channel": "organic_search",
                              "first_landing_page": "https://shop.example/p"}  # fmt: skip
    load(_order("2026-11-02T09:00:00Z", financial_status="refunded"))  # orders/updated webhook
    assert _row(clean_db)["journey_status"] == "ready"
    assert _row(clean_db)["first_channel"] == "organic_search"
    load(_order("2026-11-03T09:00:00Z", customer_journey_summary=None))
    assert _row(clean_db) == {"journey_status": "unavailable", "first_channel": "unknown",
                              "last_channel": "unknown", "first_landing_page": None}  # fmt: skip
