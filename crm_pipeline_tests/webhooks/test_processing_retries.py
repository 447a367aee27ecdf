"""Failures retry with exponential backoff, end dead after N attempts; replay re-queues them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from crm_pipeline.webhooks import RetryPolicy, replay
from crm_pipeline.webhooks.queue import UNKNOWN_SUBJECT_GRACE
from crm_pipeline_tests.webhooks.test_processing_support import (
    FAST,
    at,
    land,
    run,
    shopify_customer,
)

EVENT = {
    "type": "event",
    "id": "E9",
    "attributes": {"datetime": "2025-03-01T12:00:00+00:00", "metric_name": "Clicked Email"},
    "relationships": {"profile": {"data": {"type": "profile", "id": "K9"}}},
}
# the profile EVENT is about, arriving late
PROFILE = {
    "type": "profile",
    "id": "K9",
    "attributes": {"email": "k9@example.com", "updated": "2025-03-01T11:00:00+00:00"},
}


def row(engine: sa.Engine, event_id: int) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT status, attempts, next_attempt_at, last_error, outcome "
                "FROM webhook_events WHERE id = :id"
            ),
            {"id": event_id},
        ).one()


def test_backoff_grows_with_jitter() -> None:
    policy = RetryPolicy(base_delay=timedelta(seconds=10), max_delay=timedelta(minutes=10))
    for attempt, full in ((1, 10), (2, 20), (3, 40), (8, 600)):
        delays = [policy.delay(attempt).total_seconds() for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_failure_schedules_a_retry_later(clean_db: sa.Engine) -> None:
    event_id = land(clean_db, "klaviyo", "event", EVENT, triggered_at=at(0))
    run(clean_db, policy=RetryPolicy(base_delay=timedelta(seconds=60)))
    status, attempts, next_at, error, _ = row(clean_db, event_id)
    assert (status, attempts) == ("failed", 1)
    assert "K9" in error
    assert timedelta(seconds=25) < next_at - datetime.now(UTC) <= timedelta(seconds=60)
    # not ready yet: another run leaves it alone
    assert run(clean_db, policy=RetryPolicy(base_delay=timedelta(seconds=60))).claimed == 0


def test_dead_after_max_attempts_then_replay(clean_db: sa.Engine) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=timedelta(0), max_delay=timedelta(0))
    event_id = land(clean_db, "klaviyo", "event", EVENT, triggered_at=at(0))
    for expected in ("failed", "failed", "failed"):
        run(clean_db, policy=policy)
        assert row(clean_db, event_id).status == expected
    # an unknown profile outlives max_attempts until its grace ends (an hour after receipt)
    with clean_db.begin() as conn:
        conn.execute(sa.text("UPDATE webhook_events SET received_at = now() - interval '2 hours'"))
    run(clean_db, policy=policy)
    assert row(clean_db, event_id).status == "dead"
    assert row(clean_db, event_id).attempts == 4
    assert run(clean_db, policy=policy).claimed == 0  # dead letters stay put
    # the profile arrives; the operator replays the dead letter
    land(
        clean_db,
        "klaviyo",
        "profile",
        PROFILE,
        triggered_at=at(-1),
    )
    assert replay(clean_db, dead_only=True) == 1
    assert row(clean_db, event_id).status == "pending"
    run(clean_db, policy=policy)
    status, attempts, _, error, outcome = row(clean_db, event_id)
    assert (status, attempts, error, outcome) == ("done", 1, None, "applied")


def test_permanent_failure_is_dead_at_once_and_replay_by_id(clean_db: sa.Engine) -> None:
    bad = land(
        clean_db, "shopify", "customers/update", {"email": "no-id@example.com"}, triggered_at=at(0)
    )
    invalid = land(
        clean_db,
        "shopify",
        "customers/create",
        shopify_customer(5, at(0), email="not-an-email"),
        triggered_at=at(0),
    )
    report = run(clean_db)
    assert report.dead == 2
    assert row(clean_db, bad).status == "dead" and "permanent" in row(clean_db, bad).last_error
    assert "invalid_email" in row(clean_db, invalid).last_error
    assert replay(clean_db, ids=[bad]) == 1
    assert (row(clean_db, bad).status, row(clean_db, invalid).status) == ("pending", "dead")


def test_unknown_customer_is_dead_after_the_grace_period(clean_db: sa.Engine) -> None:
    event_id = land(
        clean_db,
        "shopify",
        "customer.tags_added",
        {"customerId": 404, "tags": ["x"]},
        triggered_at=at(0),
    )
    with clean_db.begin() as conn:
        conn.execute(sa.text("UPDATE webhook_events SET received_at = now() - interval '2 hours'"))
    run(clean_db, policy=FAST)
    assert row(clean_db, event_id).status == "dead"
    assert "grace" in row(clean_db, event_id).last_error


def test_run_that_died_is_reclaimed_after_the_lease(clean_db: sa.Engine) -> None:
    event_id = land(
        clean_db, "shopify", "customers/create", shopify_customer(6, at(0)), triggered_at=at(0)
    )
    with clean_db.begin() as conn:  # as if a run claimed it and was killed
        conn.execute(
            sa.text(
                "UPDATE webhook_events SET status = 'processing', attempts = 1, "
                "claimed_by = 'gone', "
                "claimed_at = now() - interval '10 minutes'"
            )
        )
    assert run(clean_db, policy=RetryPolicy(lease_timeout=timedelta(hours=1))).claimed == 0
    run(clean_db, policy=RetryPolicy(lease_timeout=timedelta(minutes=5)))
    assert row(clean_db, event_id)[:2] == ("done", 2)


def test_webhook_quarantine_outlives_the_failed_delivery_and_names_it(
    clean_db: sa.Engine,
) -> None:
    bad_email = land(
        clean_db,
        "shopify",
        "customers/create",
        shopify_customer(7, at(0), email="not-an-email"),
        triggered_at=at(0),
    )
    future = land(
        clean_db,
        "shopify",
        "customers/create",
        shopify_customer(8, at(1), created_at="2999-01-01T00:00:00+00:00"),
        triggered_at=at(1),
    )
    report = run(clean_db)  # one run: the loaders (and their reports) are shared
    assert report.dead == 2
    with clean_db.connect() as conn:
        kept = conn.execute(
            sa.text(
                "SELECT external_id, reasons FROM quarantined_records "
                "WHERE origin = 'webhook' ORDER BY external_id"
            )
        ).all()
        # the delivery rolled back, its quarantine rows did not
        assert [tuple(r) for r in kept] == [
            ("7", ["email: invalid_email"]),
            ("8", ["created_at: in_future"]),
        ]
        named = conn.execute(
            sa.text(
                "SELECT webhook_event_id FROM quarantined_records "
                "WHERE origin = 'webhook' ORDER BY external_id"
            )
        ).scalars()
        assert list(named) == [bad_email, future]  # and they say which delivery
    # each delivery's error names its own record's reasons only
    assert row(clean_db, bad_email).last_error == "permanent: invalid customer: " + (
        "email: invalid_email"
    )
    assert row(clean_db, future).last_error == "permanent: invalid customer: " + (
        "created_at: in_future"
    )


def _pass_time_until_next_attempt(engine: sa.Engine, event_id: int) -> timedelta:
    """Simulate waiting for the delivery's next attempt: its receipt moves back by the delay."""
    delay = max(row(engine, event_id).next_attempt_at - datetime.now(UTC), timedelta(0))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE webhook_events SET received_at = received_at - CAST(:d AS interval), "
                "next_attempt_at = now() WHERE id = :id"
            ),
            {"d": f"{delay.total_seconds()} seconds", "id": event_id},
        )
    return delay


def test_a_klaviyo_event_half_an_hour_ahead_of_its_profile_applies(clean_db: sa.Engine) -> None:
    """The production backoff schedule, with time simulated (no sleeping): the profile lands 30
    minutes after the event, and the event's next retry finds it."""
    policy = RetryPolicy()
    event_id = land(clean_db, "klaviyo", "event", EVENT, triggered_at=at(0))
    waited = timedelta(0)
    while True:
        run(clean_db, policy=policy)
        status, attempts, next_at, error, _ = row(clean_db, event_id)
        assert status == "failed", (status, attempts, waited, error)
        if waited + (next_at - datetime.now(UTC)) >= timedelta(minutes=30):
            break
        waited += _pass_time_until_next_attempt(clean_db, event_id)
    assert attempts >= policy.max_attempts - 1  # the old schedule died at max_attempts
    land(clean_db, "klaviyo", "profile", PROFILE, triggered_at=at(30))
    run(clean_db, policy=policy)  # the profile; the event waits for its next attempt
    assert row(clean_db, event_id).status == "failed"
    waited += _pass_time_until_next_attempt(clean_db, event_id)
    assert waited <= policy.unknown_subject_grace + timedelta(seconds=5)
    run(clean_db, policy=policy)
    status, _, _, error, outcome = row(clean_db, event_id)
    assert (status, error, outcome) == ("done", None, "applied")


def test_the_documented_grace_is_the_one_the_backoff_uses() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "webhook-processing.md").read_text()
    grace = RetryPolicy().unknown_subject_grace
    assert grace == UNKNOWN_SUBJECT_GRACE
    hours = f"{grace.total_seconds() / 3600:g} h"
    assert docs.count(f"until the grace period ends ({hours} after it was received") == 2
