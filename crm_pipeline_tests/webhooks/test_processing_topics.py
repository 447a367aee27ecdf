"""Each Shopify/Klaviyo topic changes the CRM as documented, once, whatever the order."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from crm_pipeline.ingest.customers import CustomerLoader
from crm_pipeline.mapping.shopify import map_customer
from crm_pipeline_tests.webhooks.test_processing_support import (
    at,
    customer_by_shopify_id,
    land,
    run,
    shopify_customer,
    statuses,
)


def test_customer_create_update_tags_consent_and_summary(clean_db: sa.Engine) -> None:
    engine = clean_db
    land(
        engine,
        "shopify",
        "customers/create",
        shopify_customer(1, at(0), tags="a, b"),
        triggered_at=at(0),
    )
    land(
        engine,
        "shopify",
        "customers/update",
        shopify_customer(1, at(5), first_name="Ann"),
        triggered_at=at(5),
    )
    # 2025-01 model: tags, consent and purchase totals on their own topics
    land(
        engine,
        "shopify",
        "customer.tags_added",
        {"customerId": "gid://shopify/Customer/1", "tags": ["vip"], "occurredAt": at(6)},
        triggered_at=at(6),
    )
    land(
        engine,
        "shopify",
        "customers_email_marketing_consent/update",
        {
            "customer_id": 1,
            "email_address": "person1@example.com",
            "email_marketing_consent": {"state": "subscribed", "consent_updated_at": at(7)},
        },
        triggered_at=at(7),
    )
    land(
        engine,
        "shopify",
        "customers/purchasing_summary",
        {
            "customerId": "gid://shopify/Customer/1",
            "numberOfOrders": 3,
            "amountSpent": {"amount": "120.00", "currencyCode": "EUR"},
        },
        triggered_at=at(8),
    )
    report = run(engine)
    assert report.outcomes["applied"] == 5, report
    customer = customer_by_shopify_id(engine, 1)
    assert customer.first_name == "Ann"
    # the update carried tags "" at t=5, so a and b were removed; vip was added at t=6
    assert customer.tags == ["vip"]
    assert customer.accepts_email_marketing is True
    assert customer.custom_attributes["shopify"]["purchasing_summary"]["numberOfOrders"] == 3
    # a 2025-01 update without tags/consent keeps them
    land(
        engine,
        "shopify",
        "customers/update",
        {k: v for k, v in shopify_customer(1, at(9), last_name="Lee").items() if k != "tags"},
        triggered_at=at(9),
    )
    run(engine)
    customer = customer_by_shopify_id(engine, 1)
    assert (customer.last_name, customer.tags, customer.accepts_email_marketing) == (
        "Lee",
        ["vip"],
        True,
    )
    assert statuses(engine) == {"done": 6}


def test_order_refund_applies_once(clean_db: sa.Engine) -> None:
    engine = clean_db
    land(engine, "shopify", "customers/create", shopify_customer(2, at(0)), triggered_at=at(0))
    order = {
        "id": 900,
        "customer": {"id": 2},
        "email": "person2@example.com",
        "created_at": at(1).isoformat(),
        "updated_at": at(1).isoformat(),
        "financial_status": "paid",
        "total_price": "100.00",
        "currency": "EUR",
        "line_items": [{"id": 1, "product_id": 5, "title": "Mug", "quantity": 2, "price": "50.00"}],
    }
    land(engine, "shopify", "orders/create", order, triggered_at=at(1))
    refund = {
        "id": 77,
        "order_id": 900,
        "created_at": at(2).isoformat(),
        "transactions": [{"amount": "50.00", "kind": "refund", "status": "success"}],
        "refund_line_items": [{"line_item_id": 1, "quantity": 1}],
    }
    land(engine, "shopify", "refunds/create", refund, triggered_at=at(2), delivery_id="r1")
    # Shopify may send the same refund again under a new delivery id
    land(engine, "shopify", "refunds/create", refund, triggered_at=at(2), delivery_id="r2")
    report = run(engine)
    assert report.outcomes["applied"] == 3 and report.outcomes["duplicate"] == 1, report
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT o.total_refunded, o.financial_status, li.refunded_quantity, "
                "o.customer_id IS NOT NULL AS linked FROM orders o "
                "JOIN order_line_items li ON li.order_id = o.id"
            )
        ).one()
    assert row == (Decimal("50.00"), "partially_refunded", 1, True)
    # an order update older than the refund cannot undo it
    land(engine, "shopify", "orders/updated", {**order, "note": "late"}, triggered_at=at(1.5))
    report = run(engine)
    assert report.outcomes["stale"] == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT total_refunded FROM orders")).scalar_one() == 50


def test_unknown_topic_is_marked_not_failed(clean_db: sa.Engine) -> None:
    land(clean_db, "shopify", "products/update", {"id": 1}, triggered_at=at(0))
    report = run(clean_db)
    assert report.outcomes["unknown_topic"] == 1
    with clean_db.connect() as conn:
        row = conn.execute(sa.text("SELECT status, outcome, last_error FROM webhook_events")).one()
    assert tuple(row) == ("done", "unknown_topic", None)


def test_delete_is_not_resurrected_by_a_stale_update(clean_db: sa.Engine) -> None:
    engine = clean_db
    land(engine, "shopify", "customers/create", shopify_customer(3, at(0)), triggered_at=at(0))
    land(engine, "shopify", "customers/delete", {"id": 3}, triggered_at=at(5))
    run(engine)
    land(engine, "shopify", "customers/update", shopify_customer(3, at(2)), triggered_at=at(2))
    report = run(engine)
    assert report.outcomes["ignored_deleted"] == 1
    customer = customer_by_shopify_id(engine, 3)
    assert customer.deleted_at is not None


def test_merge_moves_everything_to_the_survivor(clean_db: sa.Engine) -> None:
    engine = clean_db
    land(engine, "shopify", "customers/create", shopify_customer(10, at(0)), triggered_at=at(0))
    land(engine, "shopify", "customers/create", shopify_customer(11, at(0)), triggered_at=at(0))
    land(
        engine,
        "shopify",
        "orders/create",
        {
            "id": 901,
            "customer": {"id": 11},
            "created_at": at(1).isoformat(),
            "updated_at": at(1).isoformat(),
            "total_price": "10.00",
            "line_items": [],
        },
        triggered_at=at(1),
    )
    land(
        engine,
        "shopify",
        "customers/merge",
        {
            "admin_graphql_api_customer_kept_id": "gid://shopify/Customer/10",
            "admin_graphql_api_customer_deleted_id": "gid://shopify/Customer/11",
            "status": "completed",
        },
        triggered_at=at(2),
    )
    report = run(engine)
    assert report.outcomes["applied"] == 4, report
    kept = customer_by_shopify_id(engine, 10)
    with engine.connect() as conn:
        gone = conn.execute(
            sa.text("SELECT merged_into, deleted_at FROM customers WHERE id <> :id"),
            {"id": kept.id},
        ).one()
        owner = conn.execute(sa.text("SELECT customer_id FROM orders")).scalar_one()
    assert gone.merged_into == kept.id and gone.deleted_at is not None
    assert owner == kept.id


def test_klaviyo_profile_then_event(clean_db: sa.Engine) -> None:
    engine = clean_db
    profile = {
        "type": "profile",
        "id": "K1",
        "attributes": {
            "email": "k1@example.com",
            "first_name": "Kay",
            "updated": at(0).isoformat(),
        },
    }
    event = {
        "type": "event",
        "id": "E1",
        "attributes": {
            "datetime": at(1).isoformat(),
            "metric_name": "Opened Email",
            "event_properties": {"Subject": "Hi"},
        },
        "relationships": {"profile": {"data": {"type": "profile", "id": "K1"}}},
    }
    # the event lands first: it waits (retry) until the profile is known
    land(engine, "klaviyo", "event", event, triggered_at=at(1), subject_key="klaviyo:K1")
    report = run(engine)
    assert report.retry_scheduled == 1
    land(engine, "klaviyo", "profile", profile, triggered_at=at(0), subject_key="klaviyo:K1")
    report = run(engine)
    assert report.outcomes["applied"] == 2, report
    with engine.connect() as conn:
        kind = conn.execute(sa.text("SELECT activity_type FROM customer_activities")).scalar_one()
    assert kind == "email_open"


def test_pull_keeps_delta_webhook_changes_newer_than_the_pulled_record(
    clean_db: sa.Engine,
) -> None:
    """A pulled record is one observation among the webhooks: a tag or consent change timed
    after the record's updated_at survives it; one timed before it is overridden."""
    engine = clean_db
    land(
        engine,
        "shopify",
        "customers/create",
        shopify_customer(3, at(0), tags="a"),
        triggered_at=at(0),
    )
    land(
        engine,
        "shopify",
        "customer.tags_added",
        {"customerId": "gid://shopify/Customer/3", "tags": ["vip"], "occurredAt": at(10)},
        triggered_at=at(10),
    )
    land(
        engine,
        "shopify",
        "customers_email_marketing_consent/update",
        {
            "customer_id": 3,
            "email_marketing_consent": {"state": "subscribed", "consent_updated_at": at(10)},
        },
        triggered_at=at(10),
    )
    run(engine)
    assert customer_by_shopify_id(engine, 3).tags == ["a", "vip"]

    # a pull (bulk or paginated) of a record updated at t=5: newer than what we hold, older
    # than the webhooks; it renamed the person and knows nothing of vip or the consent
    pulled = shopify_customer(
        3,
        at(5),
        tags="a",
        first_name="Renamed",
        email_marketing_consent={"state": "not_subscribed", "consent_updated_at": at(1)},
    )
    loader = CustomerLoader(engine, origin="api pull")
    loader.load([map_customer(pulled)])
    assert loader.report.updated == 1
    customer = customer_by_shopify_id(engine, 3)
    assert customer.first_name == "Renamed"
    assert customer.tags == ["a", "vip"]
    assert customer.accepts_email_marketing is True

    # a later record without vip (removed in Shopify after the webhook) removes it
    later = shopify_customer(
        3,
        at(20),
        tags="a",
        email_marketing_consent={"state": "unsubscribed", "consent_updated_at": at(20)},
    )
    CustomerLoader(engine, origin="api pull").load([map_customer(later)])
    customer = customer_by_shopify_id(engine, 3)
    assert customer.tags == ["a"]
    assert customer.accepts_email_marketing is False
