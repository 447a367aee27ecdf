"""Failures retry with exponential backoff, end dead after N attempts; replay re-queues them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from crm_pipeline.webhooks import RetryPolicy, replay
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
        {
            "type": "profile",
            "id": "K9",
            "attributes": {"email": "k9@example.com", "updated": "2025-03-01T11:00:00+00:00"},
        },
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
