"""customers/redact leaves no trace of the person; customers/data_request writes the export."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from crm_pipeline.ingest import tombstones
from crm_pipeline.ingest.customers import CustomerLoader
from crm_pipeline.ingest.quarantine import quarantine
from crm_pipeline.mapping.shopify import map_customer
from crm_pipeline_tests.webhooks.test_processing_support import (
    at,
    customer_by_shopify_id,
    land,
    run,
    shopify_customer,
)

EMAIL = "zebulon.quixote@example.org"
PHONE_RAW = "(415) 555-2671"
PHONE = "+14155552671"
FIRST, LAST = "Zebulon", "Quixote-Marsh"
STREET = "742 Evergreen Terrace"
PERSON = shopify_customer(
    30,
    at(0),
    email=EMAIL,
    phone=PHONE_RAW,
    first_name=FIRST,
    last_name=LAST,
    note="Allergic to cats",
    tags="vip",
    addresses=[
        {
            "id": 301,
            "address1": STREET,
            "city": "Springfield",
            "country_code": "US",
            "first_name": FIRST,
            "last_name": LAST,
            "phone": PHONE_RAW,
            "default": True,
        }
    ],
)


def seed_person(engine: sa.Engine) -> str:
    land(engine, "shopify", "customers/create", PERSON, triggered_at=at(0))
    land(
        engine,
        "klaviyo",
        "profile",
        {
            "type": "profile",
            "id": "KZ",
            "attributes": {
                "email": EMAIL,
                "first_name": FIRST,
                "phone_number": PHONE,
                "updated": at(1).isoformat(),
                "location": {"address1": STREET, "city": "Springfield"},
            },
        },
        triggered_at=at(1),
    )
    land(
        engine,
        "klaviyo",
        "event",
        {
            "type": "event",
            "id": "EZ",
            "attributes": {
                "datetime": at(2).isoformat(),
                "metric_name": "Viewed Product",
                "event_properties": {"$ip": "203.0.113.9", "$email": EMAIL, "name": FIRST},
            },
            "relationships": {"profile": {"data": {"type": "profile", "id": "KZ"}}},
        },
        triggered_at=at(2),
    )
    land(
        engine,
        "shopify",
        "orders/create",
        {
            "id": 930,
            "customer": {"id": 30, "email": EMAIL},
            "email": EMAIL,
            "created_at": at(3).isoformat(),
            "updated_at": at(3).isoformat(),
            "total_price": "25.00",
            "line_items": [],
        },
        triggered_at=at(3),
    )
    report = run(engine)
    assert report.outcomes["applied"] == 4, report
    cid = str(customer_by_shopify_id(engine, 30).id)
    land(
        engine,
        "manual",
        "customer.note",
        {
            "customer_id": cid,
            "occurred_at": at(4).isoformat(),
            "internal_notes": f"{FIRST} called from {PHONE}",
        },
        triggered_at=at(4),
    )
    run(engine)
    with engine.begin() as conn:
        # a file row about the person under another id: found by its email's keyed hash
        quarantine(
            conn,
            origin="import file",
            source="shopify",
            record_kind="customer",
            rows=[("999", {"email": EMAIL.upper(), "name": LAST}, ["email: invalid_email"])],
        )
        conn.execute(
            sa.text(
                "INSERT INTO customer_sync_logs (customer_id, operation, firestore_status, "
                "data_snapshot) VALUES (CAST(:cid AS uuid), 'upsert', 'failed', "
                "CAST(:snap AS jsonb))"
            ),
            {"cid": cid, "snap": orjson.dumps({"email": EMAIL}).decode()},
        )
    return cid


def traces(engine: sa.Engine, needles: list[str]) -> list[str]:
    """Every (table.column, needle) of a text, json or array column that still holds a needle."""
    found = []
    with engine.connect() as conn:
        columns = conn.execute(
            sa.text(
                "SELECT c.table_name, c.column_name FROM information_schema.columns c "
                "JOIN information_schema.tables t ON t.table_schema = c.table_schema "
                "AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE' "
                "WHERE c.table_schema = 'public' AND (c.data_type IN "
                "('text', 'jsonb', 'json', 'character varying', 'ARRAY') OR c.udt_name = 'citext')"
            )
        ).all()
        for table, column in columns:
            for needle in needles:
                hit = conn.execute(
                    sa.text(
                        f'SELECT count(*) FROM "{table}" '  # names from the catalog
                        f'WHERE strpos(lower("{column}"::text), lower(:n)) > 0'
                    ),
                    {"n": needle},
                ).scalar_one()
                if hit:
                    found.append(f"{table}.{column}: {needle}")
    return found


def redact_delivery(engine: sa.Engine) -> None:
    land(
        engine,
        "shopify",
        "customers/redact",
        {
            "shop_id": 1,
            "shop_domain": "test-shop.myshopify.com",
            "customer": {"id": 30, "email": EMAIL, "phone": PHONE_RAW},
            "orders_to_redact": [930],
        },
        triggered_at=at(10),
    )


def test_redact_leaves_no_trace_and_blocks_a_later_pull(clean_db: sa.Engine) -> None:
    engine = clean_db
    cid = seed_person(engine)
    needles = [EMAIL, PHONE, PHONE_RAW, FIRST, LAST, STREET, "203.0.113.9", "Allergic to cats"]
    assert traces(engine, needles)  # the person is everywhere before
    redact_delivery(engine)
    report = run(engine)
    assert report.outcomes["applied"] == 1, report
    assert traces(engine, needles) == []
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT redacted_at IS NOT NULL, deleted_at IS NOT NULL FROM customers "
                "WHERE id = CAST(:id AS uuid)"
            ),
            {"id": cid},
        ).one()
        kinds = (
            conn.execute(sa.text("SELECT kind FROM redaction_tombstones ORDER BY kind"))
            .scalars()
            .all()
        )
        proof = conn.execute(sa.text("SELECT kind, details FROM gdpr_requests")).one()
        total = conn.execute(sa.text("SELECT total_price FROM orders")).scalar_one()
    assert tuple(row) == (True, True)
    assert set(kinds) == {"email", "phone", "shopify_id", "klaviyo_id"}
    assert proof.kind == "redact" and proof.details["customers"] >= 1
    assert total == 25  # business numbers stay, without the person

    # a later pull of the same Shopify record is refused, not resurrected
    loader = CustomerLoader(engine, origin="api pull")
    loader.load([map_customer(shopify_customer(30, at(99), email=EMAIL, first_name=FIRST))])
    assert loader.report.skipped_redacted == 1
    # and so is a late webhook about the person (its payload is scrubbed too)
    land(
        engine,
        "shopify",
        "customers/update",
        {**PERSON, "updated_at": at(50).isoformat()},
        triggered_at=at(50),
        subject_key="shopify:30",
    )
    assert run(engine).outcomes["refused_redacted"] == 1
    assert traces(engine, needles) == []


def test_data_request_writes_the_export(
    clean_db: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_HOME", str(tmp_path))
    seed_person(clean_db)
    land(
        clean_db,
        "shopify",
        "customers/data_request",
        {
            "shop_id": 1,
            "shop_domain": "test-shop.myshopify.com",
            "customer": {"id": 30, "email": EMAIL, "phone": PHONE_RAW},
            "orders_requested": [930],
            "data_request": {"id": 4242},
        },
        triggered_at=at(10),
    )
    assert run(clean_db).outcomes["applied"] == 1
    with clean_db.connect() as conn:
        path = conn.execute(
            sa.text("SELECT export_path FROM gdpr_requests WHERE kind = 'data_request'")
        ).scalar_one()
    assert Path(path).parent == tmp_path / "exports" / "gdpr"
    data = orjson.loads(Path(path).read_bytes())
    person = data["customers"][0]
    assert person["customer"]["email"] == EMAIL
    assert {s["source"] for s in person["sources"]} == {"shopify", "klaviyo"}
    assert person["addresses"] and person["orders"][0]["external_id"] == "930"
    assert data["request"]["data_request_id"] == "4242"


def test_redact_deletes_the_data_request_export(
    clean_db: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_HOME", str(tmp_path))
    previous = os.umask(0o022)
    try:
        seed_person(clean_db)
        land(
            clean_db,
            "shopify",
            "customers/data_request",
            {
                "shop_id": 1,
                "customer": {"id": 30, "email": EMAIL},
                "data_request": {"id": 77},
            },
            triggered_at=at(10),
        )
        assert run(clean_db).outcomes["applied"] == 1
    finally:
        os.umask(previous)
    with clean_db.connect() as conn:
        path = Path(
            conn.execute(
                sa.text("SELECT export_path FROM gdpr_requests WHERE kind = 'data_request'")
            ).scalar_one()
        )
    assert EMAIL in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    redact_delivery(clean_db)
    report = run(clean_db)
    assert report.outcomes["applied"] == 1, report
    assert not path.exists()
    assert list(path.parent.iterdir()) == []
    with clean_db.connect() as conn:
        export_path, details = conn.execute(
            sa.text("SELECT export_path, details FROM gdpr_requests WHERE kind = 'data_request'")
        ).one()
        redact = conn.execute(
            sa.text("SELECT details FROM gdpr_requests WHERE kind = 'redact'")
        ).scalar_one()
    assert export_path is None and "export_deleted_at" in details
    assert redact["exports_deleted"] == 1


def test_tombstones_are_keyed_and_hidden_from_analysts(
    clean_db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(tombstones.KEY_ENV, raising=False)
    seed_person(clean_db)
    redact_delivery(clean_db)
    assert run(clean_db).outcomes["applied"] == 1
    with clean_db.connect() as conn:
        hashes = conn.execute(sa.text("SELECT identity_hash FROM redaction_tombstones")).scalars()
        plain = {
            hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()
            for kind, value in (("email", EMAIL), ("phone", PHONE), ("shopify_id", "30"))
        }
        assert not plain & set(hashes)  # nobody can brute-force a bare sha256 of the email
        stored = dict(
            conn.execute(sa.text("SELECT identity_hash, scheme FROM redaction_tombstones")).all()
        )
        key = conn.execute(
            sa.text("SELECT value FROM pipeline_secrets WHERE name = 'tombstone_key'")
        ).scalar_one()
    keyed = hmac.new(key.encode(), f"email:{EMAIL}".encode(), hashlib.sha256).hexdigest()
    assert stored[keyed] == "hmac-sha256"
    assert len(key) == 64  # 256 random bits, generated on first use

    # with CRM_TOMBSTONE_KEY set, that key is used instead (every process must share it)
    monkeypatch.setenv(tombstones.KEY_ENV, "operator-provided-key")
    loader = CustomerLoader(clean_db, origin="api pull")
    loader.load([map_customer(shopify_customer(31, at(99), email="other@example.org"))])
    with clean_db.begin() as conn:
        tombstones.write_tombstones(conn, [("email", "other@example.org")], None)
        assert tombstones.find_tombstoned(conn, [("email", "other@example.org")])
    expected = hmac.new(
        b"operator-provided-key", b"email:other@example.org", hashlib.sha256
    ).hexdigest()
    with clean_db.connect() as conn:
        assert conn.execute(
            sa.text("SELECT count(*) FROM redaction_tombstones WHERE identity_hash = :h"),
            {"h": expected},
        ).scalar_one()


@pytest.mark.parametrize("table", ["redaction_tombstones", "pipeline_secrets"])
def test_analysts_cannot_read_tombstones_or_their_key(clean_db: sa.Engine, table: str) -> None:
    with clean_db.connect() as conn, pytest.raises(sa.exc.ProgrammingError) as denied:
        conn.execute(sa.text("SET ROLE crm_analyst"))
        conn.execute(sa.text(f"SELECT * FROM {table}"))  # names from the test
    assert "permission denied" in str(denied.value)


def test_legacy_sha256_tombstones_still_refuse_and_are_upgraded(clean_db: sa.Engine) -> None:
    legacy = hashlib.sha256(f"email:{EMAIL}".encode()).hexdigest()
    with clean_db.begin() as conn:  # as written before keyed tombstones (scheme defaults legacy)
        conn.execute(
            sa.text(
                "INSERT INTO redaction_tombstones (identity_hash, kind, scheme) "
                "VALUES (:h, 'email', 'sha256')"
            ),
            {"h": legacy},
        )
    loader = CustomerLoader(clean_db, origin="api pull")
    loader.load([map_customer(shopify_customer(32, at(5), email=EMAIL))])
    assert loader.report.skipped_redacted == 1
    with clean_db.connect() as conn:
        rows = conn.execute(sa.text("SELECT identity_hash, scheme FROM redaction_tombstones")).all()
        live = conn.execute(sa.text("SELECT count(*) FROM customers")).scalar_one()
    assert live == 0
    assert [r.scheme for r in rows] == ["hmac-sha256"] and rows[0].identity_hash != legacy


def test_redaction_scrub_finds_rows_by_index_not_by_scanning(clean_db: sa.Engine) -> None:
    """Every UPDATE of webhook_events and quarantined_records the redaction runs can use an
    index (with sequential scans disabled, a query that cannot shows a Seq Scan)."""
    seed_person(clean_db)
    redact_delivery(clean_db)
    captured: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if re.match(r"\s*UPDATE (webhook_events|quarantined_records) ", statement):
            captured.append((statement, parameters))

    sa.event.listen(clean_db, "before_cursor_execute", capture)
    try:
        assert run(clean_db).outcomes["applied"] == 1
    finally:
        sa.event.remove(clean_db, "before_cursor_execute", capture)
    scrubs = [(s, p) for s, p in captured if "redacted" in s and "status = 'processing'" not in s]
    assert {re.match(r"\s*UPDATE (\w+)", s).group(1) for s, _ in scrubs} == {
        "webhook_events",
        "quarantined_records",
    }
    with clean_db.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        for statement, parameters in scrubs:
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
            assert "Seq Scan" not in plan, plan
        conn.rollback()
