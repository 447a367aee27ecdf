"""Staff actions apply once and survive later Shopify/Klaviyo pulls."""

from __future__ import annotations

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


def admin(engine: sa.Engine, action: str, minutes: float, **payload: object) -> None:
    land(
        engine,
        "manual",
        action,
        {
            "action": action,
            "occurred_at": at(minutes).isoformat(),
            "actor": "jane@shop.example",
            **payload,
        },
        triggered_at=at(minutes),
    )


def test_staff_fields_survive_a_later_pull(clean_db: sa.Engine) -> None:
    engine = clean_db
    land(
        engine,
        "shopify",
        "customers/create",
        shopify_customer(20, at(0), tags="web"),
        triggered_at=at(0),
    )
    run(engine)
    cid = str(customer_by_shopify_id(engine, 20).id)
    admin(engine, "customer.note", 1, customer_id=cid, internal_notes="Prefers phone calls")
    admin(engine, "customer.tags", 2, customer_id=cid, add=["key-account", "press"])
    admin(engine, "customer.tags", 3, customer_id=cid, remove=["press"])
    admin(engine, "customer.block", 4, customer_id=cid, reason="chargebacks")
    admin(engine, "segment.add", 5, customer_id=cid, segment_name="Board gifts")
    admin(
        engine,
        "activity.record",
        6,
        customer_id=cid,
        activity_type="other",
        activity_id="call-1",
        properties={"channel": "phone"},
    )
    report = run(engine)
    assert report.outcomes["applied"] == 6, report

    # a later full pull of the same Shopify record (newer, different tags, state enabled)
    pulled = shopify_customer(20, at(60), tags="web, sale", first_name="Renamed")
    CustomerLoader(engine, origin="api pull").load([map_customer(pulled)])

    c = customer_by_shopify_id(engine, 20)
    assert c.first_name == "Renamed"  # source fields still flow
    assert c.internal_notes == "Prefers phone calls"
    assert c.manual_tags == ["key-account"]
    assert sorted(c.tags) == ["key-account", "sale", "web"]
    assert (c.status, c.status_set_by) == ("blocked", "manual")
    with engine.connect() as conn:
        seg = conn.execute(sa.text("SELECT segment_name, assigned_by FROM customer_segments")).one()
        kinds = (
            conn.execute(sa.text("SELECT activity_type FROM customer_activities ORDER BY id"))
            .scalars()
            .all()
        )
    assert tuple(seg) == ("Board gifts", "manual")
    assert kinds == ["note", "other"]  # the note history and the recorded activity


def test_staff_created_customer_resolves_and_older_actions_lose(clean_db: sa.Engine) -> None:
    engine = clean_db
    admin(
        engine,
        "customer.create",
        0,
        admin_id="adm-1",
        customer={
            "email": "Walkin@Example.com",
            "first_name": "Wally",
            "phone": "+44 20 7946 0958",
            "customer_type": "wholesale",
            "tags": ["trade"],
            "addresses": [{"address1": "1 High St", "city": "London", "country_code": "gb"}],
        },
    )
    run(engine)
    # Shopify later knows the same person: identity resolution links it to the staff record
    land(
        engine,
        "shopify",
        "customers/create",
        shopify_customer(21, at(10), email="walkin@example.com", first_name="Walter"),
        triggered_at=at(10),
    )
    admin(engine, "customer.block", 20, admin_id="adm-1")
    admin(engine, "customer.unblock", 15, admin_id="adm-1")  # older than the block: loses
    admin(engine, "customer.update", 25, admin_id="adm-1", customer={"last_name": "Walker"})
    run(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT first_name, last_name, customer_type, status, manual_tags, "
                "phone_normalized FROM customers"
            )
        ).all()
        sources = conn.execute(
            sa.text("SELECT count(DISTINCT customer_id) FROM customer_sources")
        ).scalar_one()
        city = conn.execute(
            sa.text("SELECT city FROM customer_addresses WHERE source = 'manual'")
        ).scalar_one()
    assert sources == 1 and len(rows) == 1
    # manual beats Shopify for the names staff entered; fields merge (update patched last_name)
    assert tuple(rows[0]) == ("Wally", "Walker", "wholesale", "blocked", ["trade"], "+442079460958")
    assert city == "London"
    assert statuses(engine) == {"done": 5}


def test_admin_action_for_unknown_customer_waits(clean_db: sa.Engine) -> None:
    admin(
        clean_db,
        "customer.note",
        0,
        customer_id="00000000-0000-0000-0000-000000000001",
        internal_notes="x",
    )
    admin(clean_db, "segment.add", 0, admin_id="nobody", segment_name="x", segment_type="bogus")
    report = run(clean_db)
    assert report.retry_scheduled == 1 and report.dead == 1


def test_a_customer_id_names_its_customer_in_any_letter_case(clean_db: sa.Engine) -> None:
    """customer_id is compared as a uuid (the primary key's index), not as text: capitals name
    the same customer, and a value that is no uuid names nobody (it waits, like an unknown id)."""
    land(clean_db, "shopify", "customers/create", shopify_customer(21, at(0)), triggered_at=at(0))
    run(clean_db)
    cid = str(customer_by_shopify_id(clean_db, 21).id)
    admin(clean_db, "customer.note", 1, customer_id=cid.upper(), internal_notes="Calls at noon")
    admin(clean_db, "customer.note", 2, customer_id="not-a-uuid", internal_notes="lost")
    report = run(clean_db)
    assert report.outcomes["applied"] == 1 and report.retry_scheduled == 1, report
    assert customer_by_shopify_id(clean_db, 21).internal_notes == "Calls at noon"
