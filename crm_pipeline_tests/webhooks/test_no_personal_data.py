"""No email or phone in logs, Dagster run events and metadata, or any column crm_analyst reads.

The deliveries below fail with texts that carry a known email and phone: a real PostgreSQL
unique violation (`Key (email_lowercase)=(...) already exists`), an exception quoting a phone,
and a record quarantined for a bad field. Everything an operator or analyst can see is then
searched for them.
"""

from __future__ import annotations

import logging
import re

import dagster as dg
import pytest
import sqlalchemy as sa

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.webhooks.assets import webhook_deliveries
from crm_pipeline.defs.webhooks.checks import webhook_deliveries_no_dead_letters
from crm_pipeline.firestore.mirror import WriteOutcome, _Bookkeeping
from crm_pipeline.pii import mask_pii
from crm_pipeline.webhooks import topics
from crm_pipeline.webhooks.context import ApplyContext, Outcome
from crm_pipeline_tests.webhooks.test_processing_support import at, land, shopify_customer

EMAIL = "Leak.Probe@Example.net"
PHONE = "+1 (212) 555-0187"
DIGITS = "2125550187"


def leaks(text: str) -> list[str]:
    """Which of the probe's identifiers the text holds (email any case, phone in any format)."""
    found = []
    if EMAIL.lower() in text.lower() or "leak.probe" in text.lower():
        found.append("email")
    if DIGITS in re.sub(r"[\s().+-]", "", text):
        found.append("phone")
    return found


def _duplicate_email(ctx: ApplyContext) -> Outcome:
    """Two live customers with one email: PostgreSQL refuses, its detail quoting the email."""
    for _ in range(2):
        ctx.conn.execute(
            sa.text("INSERT INTO customers (email, phone) VALUES (:email, :phone)"),
            {"email": EMAIL, "phone": PHONE},
        )
    return Outcome("applied")


def _phone_in_message(ctx: ApplyContext) -> Outcome:
    raise ValueError(f"cannot parse phone {PHONE} of {EMAIL}")


def analyst_columns(conn: sa.Connection) -> list[tuple[str, str]]:
    return [
        (r.table_name, r.column_name)
        for r in conn.execute(
            sa.text(
                "SELECT DISTINCT table_name, column_name FROM information_schema.column_privileges "
                "WHERE grantee = 'crm_analyst' AND privilege_type = 'SELECT' "
                "AND table_schema = 'public' ORDER BY 1, 2"
            )
        )
    ]


def test_errors_with_personal_data_are_masked_everywhere(
    clean_db: sa.Engine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(topics.SHOPIFY_HANDLERS, "customers/probe_duplicate", _duplicate_email)
    monkeypatch.setitem(topics.SHOPIFY_HANDLERS, "customers/probe_phone", _phone_in_message)
    land(clean_db, "shopify", "customers/probe_duplicate", {"id": 1}, triggered_at=at(0))
    land(clean_db, "shopify", "customers/probe_phone", {"id": 2}, triggered_at=at(1))
    land(
        clean_db,
        "shopify",
        "customers/create",
        shopify_customer(3, at(2), email=EMAIL, phone=PHONE, created_at="2999-01-01T00:00:00Z"),
        triggered_at=at(2),
    )
    caplog.set_level(logging.INFO)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [webhook_deliveries, webhook_deliveries_no_dead_letters],
            resources={"postgres": PostgresResource(dsn=database_url)},
            instance=instance,
        )
        assert result.success
        events = instance.all_logs(result.run_id)
        event_text = "\n".join(
            f"{e.user_message} {e.dagster_event!r}" if e.dagster_event else e.user_message
            for e in events
        )
    meta = result.asset_materializations_for_node("webhook_deliveries")[0].metadata
    assert meta["dead"].value + meta["failed"].value == 3
    errors = "\n".join(meta["errors"].value)
    # the errors still say what went wrong, without whose data it was
    assert "UniqueViolation" in errors and "email_lowercase" in errors
    assert "created_at: in_future" in errors
    assert leaks(errors) == []
    assert leaks(event_text) == [], event_text
    assert "webhook delivery failed" in event_text  # the log lines were searched
    assert leaks(caplog.text) == []
    assert "failed" in caplog.text

    with clean_db.connect() as conn:
        errors_stored = conn.execute(
            sa.text("SELECT string_agg(last_error, ' | ') FROM webhook_events")
        ).scalar_one()
        quarantined = conn.execute(
            sa.text("SELECT record::text FROM quarantined_records WHERE origin = 'webhook'")
        ).scalar_one()
    assert "Key (email_lowercase)=(***)" in errors_stored
    assert leaks(quarantined) == ["email", "phone"]  # kept whole, for the pipeline only

    # every column an analyst may read, read as the analyst
    hits = []
    with clean_db.connect() as conn:
        columns = analyst_columns(conn)
        conn.execute(sa.text("SET ROLE crm_analyst"))
        assert ("quarantined_records", "reasons") in columns
        assert ("quarantined_records", "record") not in columns
        for table, column in columns:
            values = conn.execute(
                sa.text(f'SELECT "{column}"::text FROM "{table}"')  # names from the catalog
            ).scalars()
            hits += [f"{table}.{column}" for v in values if v is not None and leaks(v)]
        conn.execute(sa.text("RESET ROLE"))
    assert len(columns) > 100
    assert hits == []


def test_mirror_errors_are_masked_before_they_are_stored() -> None:
    book = _Bookkeeping()
    error = f"INVALID_ARGUMENT: field email {EMAIL.lower()} phone {PHONE}"
    book.state("c1", None, {}, "failed", 1, error)
    book.log("00000000-0000-0000-0000-000000000001", "upsert", WriteOutcome(False, 1, error))
    stored = [*book.upserts["last_error"], *book.logs["error_message"]]
    assert all(s and "INVALID_ARGUMENT" in s and not leaks(s) for s in stored), stored


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("unknown subject: shopify:7001234567890 at 2025-03-01T12:00:00+00:00", True),
        ("customer 1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed, gid://shopify/Customer/42", True),
        (f"DETAIL:  Key (phone_normalized)=(+12125550187) already exists. {EMAIL}", False),
        ("DETAIL:  Failing row contains (Leak, Probe, 212.555.0187).", False),
        ("[SQL: INSERT x]\n[parameters: {'name': 'Zeb', 'e': 'a@b.c'}]", False),
    ],
)
def test_mask_pii_keeps_ids_and_hides_people(text: str, kept: bool) -> None:
    masked = mask_pii(text)
    assert (masked == text) is kept
    assert not leaks(masked) and "Zeb" not in masked and "a@b.c" not in masked
