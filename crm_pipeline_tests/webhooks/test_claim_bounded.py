"""The claim loop holds nothing that grows with the run: many blocked deliveries, bounded claims.

Each delivery below fails (its profile is unknown) and is ready again at once (zero backoff),
so only the run's skip-what-I-attempted rule keeps one run from burning its retries. Every claim
statement the run sends must stay the same size however many deliveries it went through.
"""

from __future__ import annotations

import sqlalchemy as sa

from crm_pipeline_tests.webhooks.test_processing_support import at, land, run

BLOCKED = 120


def blocked_event(n: int) -> dict:
    """A Klaviyo event whose profile the CRM does not know: it fails and is retried."""
    return {
        "type": "event",
        "id": f"EB{n}",
        "attributes": {"datetime": "2025-03-01T12:00:00+00:00", "metric_name": "Clicked Email"},
        "relationships": {"profile": {"data": {"type": "profile", "id": f"KB{n}"}}},
    }


def test_a_run_over_many_blocked_deliveries_sends_claims_of_constant_size(
    clean_db: sa.Engine,
) -> None:
    for n in range(BLOCKED):
        land(clean_db, "klaviyo", "event", blocked_event(n), triggered_at=at(n))
    claims: list[int] = []

    @sa.event.listens_for(clean_db, "before_cursor_execute")
    def measure(conn, cursor, statement, parameters, context, executemany) -> None:
        if "FOR UPDATE SKIP LOCKED" in statement:
            claims.append(len(repr(parameters)))

    try:
        report = run(clean_db, batch_size=10)
    finally:
        sa.event.remove(clean_db, "before_cursor_execute", measure)

    assert report.claimed == BLOCKED and report.retry_scheduled == BLOCKED
    with clean_db.connect() as conn:
        attempts = conn.execute(sa.text("SELECT DISTINCT attempts FROM webhook_events")).all()
    assert attempts == [(1,)]  # each attempted once in this run, none burnt
    assert len(claims) == BLOCKED // 10 + 1
    assert max(claims) == min(claims)  # nothing in a claim grows with what the run went through

    # the next run takes each of them again, once
    again = run(clean_db, batch_size=10)
    assert again.claimed == BLOCKED
