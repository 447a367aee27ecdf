"""The notes history (customer_notes): staff edits with their actor, source notes from pulls."""

from __future__ import annotations

import sqlalchemy as sa

from crm_pipeline.ingest.customers import CustomerLoader
from crm_pipeline.mapping.shopify import map_customer
from crm_pipeline_tests.webhooks.test_admin_actions import admin
from crm_pipeline_tests.webhooks.test_processing_support import (
    at,
    customer_by_shopify_id,
    land,
    run,
    shopify_customer,
)


def _history(engine: sa.Engine, cid: str) -> list[tuple[str, str | None, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT kind, body, actor FROM customer_notes WHERE customer_id = :c "
                "ORDER BY created_at, id"
            ),
            {"c": cid},
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def test_every_notes_version_is_kept(clean_db: sa.Engine) -> None:
    engine = clean_db
    land(
        engine,
        "shopify",
        "customers/create",
        shopify_customer(40, at(0), note="Gift wrap"),
        triggered_at=at(0),
    )
    run(engine)
    cid = str(customer_by_shopify_id(engine, 40).id)
    admin(engine, "customer.note", 1, customer_id=cid, internal_notes="Called, wants a refund")
    admin(engine, "customer.note", 2, customer_id=cid, internal_notes="Refund sent")
    assert run(engine).outcomes["applied"] == 2
    # a later pull changes the source note; one with the same note records nothing
    loader = CustomerLoader(engine, origin="api pull")
    loader.load([map_customer(shopify_customer(40, at(60), note="No gift wrap"))])
    loader.load([map_customer(shopify_customer(40, at(61), note="No gift wrap", tags="x"))])

    history = _history(engine, cid)
    staff = [h for h in history if h[0] == "internal_notes"]
    source = [h for h in history if h[0] == "notes"]
    assert staff == [
        ("internal_notes", "Called, wants a refund", "jane@shop.example"),
        ("internal_notes", "Refund sent", "jane@shop.example"),
    ]
    assert source == [("notes", "Gift wrap", None), ("notes", "No gift wrap", None)]
