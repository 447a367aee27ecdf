"""Customer loading: identity resolution, survivorship, idempotency, quarantine, deletes."""

from __future__ import annotations

import sqlalchemy as sa

from crm_pipeline.ingest.customers import CustomerLoader, reconcile_deletions
from crm_pipeline.mapping.klaviyo import map_profile
from crm_pipeline.mapping.shopify import map_customer


def shopify(cid: int, email: str | None, updated: str = "2025-01-01T00:00:00Z", **extra):
    return {
        "id": cid, "email": email, "first_name": extra.pop("first_name", "Ana"),
        "last_name": "López", "phone": extra.pop("phone", None), "state": "enabled",
        "tags": extra.pop("tags", "a, b"), "created_at": "2024-01-01T00:00:00Z",
        "updated_at": updated,
        "email_marketing_consent": {"state": "subscribed", "consent_updated_at": "2024-02-01T00:00:00Z"},
        "addresses": [{"id": cid * 10, "address1": "1 Main St", "city": "Austin",
                       "country_code": "us", "default": True}],
        **extra,
    }


def klaviyo(pid: str, email: str | None, updated: str = "2025-01-02T00:00:00Z", **attrs):
    return {"type": "profile", "id": pid,
            "attributes": {"email": email, "first_name": "Ana", "updated": updated,
                           "created": "2023-06-01T00:00:00Z", **attrs}}


def load(engine, rows, mapper, **kw):
    loader = CustomerLoader(engine, origin="api pull", **kw)
    return loader.load([mapper(r) for r in rows])


def count(engine, sql: str, **params) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def test_one_person_across_sources_by_email_phone_and_external_id(clean_db):
    load(clean_db, [shopify(1, "Ana@Example.com"), shopify(2, None, phone="+14155550134")],
         map_customer)
    report = load(
        clean_db,
        [
            klaviyo("K1", "  ana@example.COM "),              # email, other casing/whitespace
            klaviyo("K2", None, phone_number="(415) 555-0134"),  # national-format phone
            klaviyo("K3", "other@example.com", external_id="1"),  # link wins? email differs
            klaviyo("K4", None, external_id="2"),              # external id only
            klaviyo("K5", "new@example.com"),
        ],
        map_profile,
    )
    assert report.inserted == 1 + 1  # K5, and K3 (its own email conflicts with customer 1)
    assert count(clean_db, "SELECT count(*) FROM customers") == 4
    assert count(clean_db, "SELECT count(*) FROM customer_sources") == 7
    with clean_db.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT s.external_id, c.email_lowercase FROM customer_sources s "
            "JOIN customers c ON c.id = s.customer_id ORDER BY s.external_id")).all()
    owner = dict(rows)
    assert owner["K1"] == owner["1"] == "ana@example.com"
    assert owner["K2"] == owner["2"] == owner["K4"]


def test_reload_is_idempotent_and_only_newer_wins(clean_db):
    load(clean_db, [shopify(1, "a@x.io", first_name="Ana")], map_customer)
    again = load(clean_db, [shopify(1, "a@x.io", first_name="Ana")], map_customer)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 1)
    stale = load(clean_db, [shopify(1, "a@x.io", "2024-01-01T00:00:00Z", first_name="Old")],
                 map_customer)
    assert stale.unchanged == 1
    newer = load(clean_db, [shopify(1, "a@x.io", "2025-06-01T00:00:00Z", first_name="Anna")],
                 map_customer)
    assert newer.updated == 1
    with clean_db.connect() as conn:
        assert conn.execute(sa.text("SELECT first_name FROM customers")).scalar_one() == "Anna"


def test_invalid_records_are_quarantined_with_every_reason(clean_db):
    report = load(clean_db, [shopify(1, "not-an-email", "2999-01-01T00:00:00Z"),
                             shopify(2, "ok@x.io")], map_customer)
    assert report.quarantined_total == 2  # two reasons, one record
    with clean_db.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT origin, external_id, reasons, record->>'email' AS email "
            "FROM quarantined_records")).one()
    assert row.origin == "api pull" and row.external_id == "1"
    assert sorted(row.reasons) == ["email: invalid_email", "source_updated_at: in_future"]
    assert row.email == "not-an-email"
    load(clean_db, [shopify(1, "not-an-email", "2999-01-01T00:00:00Z")], map_customer)
    assert count(clean_db, "SELECT count(*) FROM quarantined_records") == 1


def test_survivorship_and_addresses(clean_db):
    load(clean_db, [shopify(1, "a@x.io", tags="vip, wholesale")], map_customer)
    load(clean_db, [klaviyo("K1", "a@x.io", last_name="Klav", properties={"shoe": 42})],
         map_profile)
    with clean_db.connect() as conn:
        c = conn.execute(sa.text("SELECT * FROM customers")).mappings().one()
        addresses = conn.execute(sa.text("SELECT count(*) FROM customer_addresses")).scalar_one()
    assert c["last_name"] == "López"  # shopify beats klaviyo
    assert c["tags"] == ["vip", "wholesale"] and c["customer_type"] == "wholesale"
    assert c["custom_attributes"]["klaviyo"]["properties"] == {"shoe": 42}
    assert c["accepts_email_marketing"] is True
    assert c["created_at"].year == 2023  # earliest source
    assert addresses == 1


def test_full_reconcile_soft_deletes_what_disappeared(clean_db):
    load(clean_db, [shopify(i, f"c{i}@x.io") for i in range(1, 5)], map_customer)
    load(clean_db, [shopify(i, f"c{i}@x.io") for i in range(1, 4)], map_customer,
         reconcile_run_id="r1")
    result = reconcile_deletions(clean_db, "shopify", "r1")
    assert result == {"sources_deleted": 1, "customers_deleted": 1}
    assert count(clean_db, "SELECT count(*) FROM customers WHERE deleted_at IS NULL") == 3
    # a stale pull of the deleted customer does not resurrect it
    load(clean_db, [shopify(4, "c4@x.io", "2026-01-01T00:00:00Z")], map_customer)
    assert count(clean_db, "SELECT count(*) FROM customers WHERE deleted_at IS NULL") == 3
