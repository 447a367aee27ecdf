"""The dashboard is true and fresh: statuses (inactive) follow the documented rule, process_webhooks
refreshes stats/current (equal to numbers computed here from the tables), one growth-chart
document per day, and a bounded recent_activity feed equal to the latest activities in SQL.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.analytics.segments import INACTIVE_AFTER_DAYS, refresh_segments
from crm_pipeline.firestore.dashboard_documents import (
    RECENT_ACTIVITY,
    RECENT_ACTIVITY_LIMIT,
    stats_history_path,
)
from crm_pipeline.firestore.mirror import sync_dashboard
from crm_pipeline_tests.firestore.seed import seed_customers
from crm_pipeline_tests.webhooks.test_processing_support import land, shopify_customer

N = 160
IDLE_EVERY = 7  # customers i % 7 == 0 were last seen years ago


def _make_recent(engine: sa.Engine, idle_every: int) -> None:
    """Shift the seeded store's dates to the last weeks; make every `idle_every`-th customer
    idle (created, ordered and last active in 2020, no activities)."""
    shift = "now() - timestamptz '2025-06-10 00:00:00+00'"
    idle = (
        "SELECT id FROM (SELECT id, row_number() OVER (ORDER BY email) AS n FROM customers) s "
        f"WHERE n % {idle_every} = 0"
    )
    with engine.begin() as conn:
        for table, column in (
            ("customers", "created_at"),
            ("customers", "last_active_at"),
            ("orders", "created_at"),
            ("customer_activities", "occurred_at"),
        ):  # constant names and expressions, no values
            conn.execute(sa.text(f"UPDATE {table} SET {column} = {column} + ({shift})"))
        conn.execute(sa.text(f"DELETE FROM customer_activities WHERE customer_id IN ({idle})"))
        conn.execute(
            sa.text(
                f"UPDATE orders SET created_at = timestamptz '2020-01-05' "
                f"WHERE customer_id IN ({idle})"
            )
        )
        conn.execute(
            sa.text(
                "UPDATE customers SET created_at = timestamptz '2020-01-01', "
                f"last_active_at = timestamptz '2020-01-02' WHERE id IN ({idle})"
            )
        )
        # staff froze one idle customer's status: never changed by the pipeline
        conn.execute(
            sa.text(
                "UPDATE customers SET status = 'active', status_set_by = 'manual' "
                f"WHERE id = (SELECT id FROM customers WHERE id IN ({idle}) ORDER BY id LIMIT 1)"
            )
        )


def _facts(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.id::text, c.status, c.status_set_by, c.created_at, c.last_active_at, "
                "(SELECT max(o.created_at) FROM orders o WHERE o.customer_id = c.id) AS o, "
                "(SELECT max(x.occurred_at) FROM customer_activities x "
                " WHERE x.customer_id = c.id) AS x, "
                "EXISTS (SELECT 1 FROM customer_segments s WHERE s.customer_id = c.id "
                "        AND s.segment_name = 'vip') AS vip_segment "
                "FROM customers c WHERE c.deleted_at IS NULL AND c.merged_into IS NULL"
            )
        ).mappings()
        return {row["id"]: dict(row) for row in rows}


def expected_status(before: dict[str, Any], as_of: datetime, days: int, vip: bool) -> str:
    """The documented rule (docs/metrics.md#status), written from scratch."""
    if before["status_set_by"] == "manual" or before["status"] in ("blocked", "pending"):
        return str(before["status"])
    seen = (before["created_at"], before["last_active_at"], before["o"], before["x"])
    if max(t for t in seen if t is not None) < as_of - timedelta(days=days):
        return "inactive"
    return "vip" if vip else "active"


@pytest.mark.parametrize("days", [INACTIVE_AFTER_DAYS, 30])
def test_segmentation_sets_inactive_and_reactivates(clean_db: sa.Engine, days: int) -> None:
    seed_customers(clean_db, N)  # seeds some 'inactive', 'vip', 'blocked' statuses
    _make_recent(clean_db, IDLE_EVERY)
    before = _facts(clean_db)
    as_of = datetime.now(UTC)
    summary = refresh_segments(clean_db, as_of, inactive_after_days=days)
    after = _facts(clean_db)
    for cid, facts in before.items():
        vip = after[cid]["vip_segment"]
        assert after[cid]["status"] == expected_status(facts, as_of, days, vip), cid
    assert summary["status_set_inactive"] > 0 and summary["status_reactivated"] > 0
    # a second run with the same inputs changes nothing
    again = refresh_segments(clean_db, as_of, inactive_after_days=days)
    assert again["status_set_inactive"] == again["status_reactivated"] == 0


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value.quantize(Decimal("0.01"), ROUND_HALF_UP))


def cards_from_tables(engine: sa.Engine) -> dict[str, Any]:
    """The dashboard cards computed here from customers and customer_metrics."""
    with engine.connect() as conn:
        month = conn.execute(sa.text("SELECT date_trunc('month', now())")).scalar_one()
        rows = conn.execute(
            sa.text(
                "SELECT c.status, c.created_at, m.lifetime_value, m.churn_probability, "
                "m.total_orders FROM customers c "
                "LEFT JOIN customer_metrics m ON m.customer_id = c.id "
                "WHERE c.deleted_at IS NULL AND c.merged_into IS NULL"
            )
        ).all()
    last_month = (month - timedelta(days=1)).replace(day=1)
    ltvs = [r.lifetime_value for r in rows if r.lifetime_value is not None]
    buyers = [r for r in rows if (r.total_orders or 0) > 0 and r.churn_probability is not None]
    new = sum(1 for r in rows if r.created_at >= month)
    older = len(rows) - new
    churn = Decimal(sum(r.churn_probability >= Decimal("0.5") for r in buyers)) / len(buyers)
    return {
        "total_customers": len(rows),
        "active_customers": sum(r.status in ("active", "vip") for r in rows),
        "vip_customers": sum(r.status == "vip" for r in rows),
        "inactive_customers": sum(r.status == "inactive" for r in rows),
        "average_ltv": _money(sum(ltvs, Decimal(0)) / len(ltvs)) if ltvs else None,
        "churn_rate": round(float(churn), 4),
        "new_this_month": new,
        "new_last_month": sum(1 for r in rows if last_month <= r.created_at < month),
        "high_risk_customers": sum(
            r.churn_probability is not None and r.churn_probability >= Decimal("0.7") for r in rows
        ),
        "growth_rate": round(new / older, 4) if older else None,
    }


def feed_from_tables(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT x.id::text FROM customer_activities x JOIN customers c "
                    "ON c.id = x.customer_id WHERE c.deleted_at IS NULL AND c.merged_into IS NULL "
                    "AND c.redacted_at IS NULL ORDER BY x.occurred_at DESC, x.id DESC LIMIT :n"
                ),
                {"n": RECENT_ACTIVITY_LIMIT},
            ).scalars()
        )


def _feed(client: firestore.Client) -> dict[str, dict[str, Any]]:
    return {s.id: s.to_dict() or {} for s in client.collection(RECENT_ACTIVITY).stream()}


def test_process_webhooks_refreshes_a_true_dashboard(
    clean_db: sa.Engine, firestore_client: firestore.Client
) -> None:
    from crm_pipeline.definitions import defs

    seed_customers(clean_db, N)
    _make_recent(clean_db, IDLE_EVERY)
    land(clean_db, "shopify", "customers/create", shopify_customer(9001, datetime.now(UTC)))
    result = defs.resolve_job_def("process_webhooks").execute_in_process()
    assert result.success

    stats = firestore_client.document("stats/current").get().to_dict() or {}
    expected = cards_from_tables(clean_db)
    assert {key: stats[key] for key in expected} == expected
    assert expected["inactive_customers"] > 0 and expected["total_customers"] == N + 1

    today = datetime.now(UTC).date()
    history = firestore_client.document(stats_history_path(today)).get().to_dict() or {}
    assert history["date"] == today.isoformat()
    assert {key: history[key] for key in expected} == expected
    feed = _feed(firestore_client)
    newest_first = sorted(feed, key=lambda i: (feed[i]["occurred_at"], int(i)), reverse=True)
    assert newest_first == feed_from_tables(clean_db)
    assert len(feed) == RECENT_ACTIVITY_LIMIT


def test_history_is_one_document_per_day_and_the_feed_stays_bounded(
    clean_db: sa.Engine, firestore_client: firestore.Client
) -> None:
    seed_customers(clean_db, N)
    _make_recent(clean_db, IDLE_EVERY)
    day = date(2026, 11, 30)
    first = sync_dashboard(clean_db, firestore_client, today=day)
    assert first.activity_written == RECENT_ACTIVITY_LIMIT and first.activity_deleted == 0
    sync_dashboard(clean_db, firestore_client, today=day)  # rewritten the same day
    days = firestore_client.collection("stats/history/days")
    assert [d.id for d in days.list_documents()] == ["2026-11-30"]
    unchanged = sync_dashboard(clean_db, firestore_client, today=day + timedelta(days=1))
    assert sorted(d.id for d in days.list_documents()) == ["2026-11-30", "2026-12-01"]
    assert unchanged.activity_written == unchanged.activity_deleted == 0

    # the customer behind the newest activity leaves; new activities arrive for another
    before = set(_feed(firestore_client))
    newest = feed_from_tables(clean_db)[0]
    with clean_db.begin() as conn:
        gone = conn.execute(
            sa.text(
                "UPDATE customers SET deleted_at = now() WHERE id = (SELECT customer_id "
                "FROM customer_activities WHERE id = CAST(:id AS bigint)) RETURNING id::text"
            ),
            {"id": newest},
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO customer_activities (customer_id, activity_type, occurred_at, "
                "source, external_id) SELECT id, 'page_view', now() + k * interval '1 second', "
                "'klaviyo', 'fresh-' || k FROM customers, generate_series(1, 3) k "
                "WHERE deleted_at IS NULL ORDER BY id LIMIT 3"
            )
        )
    later = sync_dashboard(clean_db, firestore_client, today=day + timedelta(days=1))
    feed = _feed(firestore_client)
    assert set(feed) == set(feed_from_tables(clean_db)) and len(feed) == RECENT_ACTIVITY_LIMIT
    assert all(item["customer_id"] != gone for item in feed.values())
    assert later.activity_written == len(set(feed) - before) >= 3
    assert later.activity_deleted == len(before - set(feed)) >= 3
