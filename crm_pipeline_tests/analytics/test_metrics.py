"""customer_metrics against an independent pandas computation, re-runs and incremental runs."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from crm_pipeline.analytics.metrics import changed_customer_ids, compute_metrics
from crm_pipeline.analytics.scores import write_scores
from crm_pipeline.analytics.segments import refresh_segments
from crm_pipeline_tests.analytics.seed import AS_OF, seed_store

# The documented engagement formula (docs/metrics.md), restated here rather than imported.
WEIGHTS = {
    "email_open": 1, "email_click": 3, "sms_click": 3, "page_view": 0.5,
    "active_on_site": 1, "product_view": 2, "add_to_cart": 4, "checkout_started": 5,
}  # fmt: skip
ORDER_WEIGHT, HALF_LIFE, SCALE = 10.0, 30.0, 10.0


def frame(engine: sa.Engine, query: str) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(sa.text(query))
        return pd.DataFrame(result.all(), columns=list(result.keys()))


def expected_metrics(engine: sa.Engine, as_of) -> dict[str, dict]:
    customers = frame(engine, "SELECT id::text AS cid FROM customers")
    orders = frame(
        engine,
        "SELECT id::text AS oid, customer_id::text AS cid, created_at, cancelled_at,"
        " financial_status, total_price::float8 AS price, total_refunded::float8 AS refunded"
        " FROM orders",
    )
    items = frame(
        engine,
        "SELECT order_id::text AS oid, vendor, product_type, quantity, refunded_quantity"
        " FROM order_line_items",
    )
    acts = frame(
        engine,
        "SELECT customer_id::text AS cid, activity_type, occurred_at, properties"
        " FROM customer_activities",
    )
    orders = orders[orders.created_at <= as_of].copy()
    orders["cancelled"] = orders.cancelled_at.notna() & (orders.cancelled_at <= as_of)
    orders["completed"] = ~orders.cancelled & orders.financial_status.isin(
        ["paid", "partially_refunded", "refunded"]
    )
    refunded_items = set(items[items.refunded_quantity > 0].oid)
    acts = acts[acts.occurred_at <= as_of]
    out = {}
    for cid in customers.cid:
        o = orders[orders.cid == cid]
        done = o[o.completed]
        spent, refunded = round(done.price.sum(), 2), round(done.refunded.sum(), 2)
        it = items[items.oid.isin(done.oid)].copy()
        it["net"] = (it.quantity - it.refunded_quantity).clip(lower=0)

        def favourite(col: str, it=it):
            valid = it[it[col].notna() & (it[col].fillna("").str.strip() != "")]
            sums = valid.groupby(col).net.sum()
            sums = sums[sums > 0]
            if sums.empty:
                return None
            best = sums.max()
            return sorted(sums[sums == best].index)[0]

        last = done.created_at.max() if len(done) else None
        a = acts[acts.cid == cid]
        opens = int((a.activity_type == "email_open").sum())
        clicks = int((a.activity_type == "email_click").sum())
        received = int(
            (
                (a.activity_type == "other")
                & a.properties.map(lambda p: p.get("metric") == "Received Email")
            ).sum()
        )
        day_start = pd.Timestamp(as_of).tz_convert("UTC").normalize()
        decay_age = lambda ts, start=day_start: max(0.0, (start - ts).total_seconds() / 86400)  # noqa: E731
        raw = sum(ORDER_WEIGHT * 0.5 ** (decay_age(t) / HALF_LIFE) for t in done.created_at)
        raw += sum(
            WEIGHTS.get(k, 0) * 0.5 ** (decay_age(t) / HALF_LIFE)
            for k, t in zip(a.activity_type, a.occurred_at, strict=True)
        )
        denominator_open = max(received, opens)
        denominator_click = max(received, opens, clicks)
        out[cid] = {
            "total_orders": len(o),
            "completed_orders": len(done),
            "cancelled_orders": int(o.cancelled.sum()),
            "returned_orders": int(((done.refunded > 0) | done.oid.isin(refunded_items)).sum()),
            "total_spent": spent,
            "total_refunded": refunded,
            "net_revenue": round(spent - refunded, 2),
            "lifetime_value": round(spent - refunded, 2),
            "average_order_value": round(spent / len(done), 2) if len(done) else 0.0,
            "items_purchased": int(it.net.sum()),
            "favorite_category": favourite("product_type"),
            "favorite_brand": favourite("vendor"),
            "first_order_date": done.created_at.min() if len(done) else None,
            "last_order_date": last,
            "days_since_last_order": (
                (pd.Timestamp(as_of).tz_convert("UTC").date() - last.tz_convert("UTC").date()).days
                if last is not None
                else None
            ),
            "email_opens": opens,
            "email_clicks": clicks,
            "email_received": received,
            "open_rate": round(opens / denominator_open, 4) if denominator_open else None,
            "click_rate": round(clicks / denominator_click, 4) if denominator_click else None,
            "engagement_score": round(100 * (1 - math.exp(-raw / SCALE)), 2),
        }
    return out


def metrics_table(engine: sa.Engine) -> pd.DataFrame:
    return frame(engine, "SELECT * FROM customer_metrics ORDER BY customer_id").set_index(
        "customer_id"
    )


def test_every_metric_matches_an_independent_computation(clean_db: sa.Engine) -> None:
    seed_store(clean_db, customers=80)
    run = compute_metrics(clean_db, AS_OF)
    assert run.customers == 80
    actual = metrics_table(clean_db)
    expected = expected_metrics(clean_db, AS_OF)
    mismatches = []
    for cid, want in expected.items():
        got = actual.loc[uuid.UUID(cid)]
        for column, value in want.items():
            have = got[column]
            if value is None or (isinstance(value, float) and np.isnan(value)):
                ok = have is None or pd.isna(have)
            elif isinstance(value, float):
                ok = have is not None and not pd.isna(have) and abs(float(have) - value) <= 0.011
            else:
                ok = have == value
            if not ok:
                mismatches.append((cid, column, value, have))
    assert not mismatches, mismatches[:10]
    # the seed has every kind of case the definitions distinguish
    assert (actual.cancelled_orders > 0).any() and (actual.returned_orders > 0).any()
    assert (actual.completed_orders == 0).any() and actual.favorite_category.isna().any()


def dump(engine: sa.Engine, table: str, drop: tuple[str, ...] = ()) -> list[tuple]:
    df = frame(engine, f"SELECT * FROM {table}")  # table names are test constants
    df = df.drop(columns=[c for c in drop if c in df.columns])
    return sorted(map(tuple, df.astype(str).to_numpy().tolist()))


def test_rerun_with_same_as_of_is_identical(clean_db: sa.Engine) -> None:
    seed_store(clean_db, customers=60, seed=11)
    compute_metrics(clean_db, AS_OF)
    write_scores(clean_db, AS_OF)
    refresh_segments(clean_db, AS_OF)
    metrics_before = dump(clean_db, "customer_metrics", ("computed_at",))
    segments_before = dump(clean_db, "customer_segments")
    customers_before = dump(clean_db, "customers")
    compute_metrics(clean_db, AS_OF)
    write_scores(clean_db, AS_OF)
    refresh_segments(clean_db, AS_OF)
    assert dump(clean_db, "customer_metrics", ("computed_at",)) == metrics_before
    assert dump(clean_db, "customer_segments") == segments_before
    assert dump(clean_db, "customers") == customers_before
    assert dump(clean_db, "customer_segment_history") == []


def test_backfill_ignores_later_orders_and_activities(clean_db: sa.Engine) -> None:
    seed_store(clean_db, customers=40, seed=3)
    earlier = AS_OF - timedelta(days=200)
    compute_metrics(clean_db, earlier)
    actual = metrics_table(clean_db)
    expected = expected_metrics(clean_db, earlier)
    for cid, want in expected.items():
        got = actual.loc[uuid.UUID(cid)]
        assert got.total_orders == want["total_orders"]
        assert float(got.total_spent) == pytest.approx(want["total_spent"], abs=0.01)
        assert got.email_opens == want["email_opens"]


def test_incremental_recomputes_only_changed_customers(clean_db: sa.Engine) -> None:
    store = seed_store(clean_db, customers=30, seed=5)
    compute_metrics(clean_db, AS_OF)
    with clean_db.begin() as conn:
        # make every row look computed a while ago, after its inputs were written
        conn.execute(sa.text("UPDATE customer_metrics SET computed_at = now() + interval '1 hour'"))
    assert changed_customer_ids(clean_db, AS_OF) == []
    touched, ordered, new = store.customer_ids[0], store.customer_ids[1], None
    with clean_db.begin() as conn:
        conn.execute(sa.text("UPDATE customer_metrics SET computed_at = now() - interval '1 hour'"))
        # backdate every input to before the computation (without the updated_at triggers)
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        for table in ("customers", "orders"):
            conn.execute(sa.text(f"UPDATE {table} SET updated_at = now() - interval '2 hours'"))
        conn.execute(
            sa.text("UPDATE customer_activities SET created_at = now() - interval '2 hours'")
        )
        conn.execute(sa.text("SET LOCAL session_replication_role = origin"))
        conn.execute(
            sa.text("UPDATE customers SET notes = 'called' WHERE id = :id"), {"id": touched}
        )
        conn.execute(
            sa.text(
                "INSERT INTO orders (customer_id, source, external_id, created_at,"
                " financial_status, total_price) VALUES (:id, 'manual', 'new-1',"
                " :at, 'paid', 99)"
            ),
            {"id": ordered, "at": AS_OF - timedelta(days=1)},
        )
        new = conn.execute(
            sa.text("INSERT INTO customers (email) VALUES ('fresh@example.com') RETURNING id")
        ).scalar_one()
    changed = set(changed_customer_ids(clean_db, AS_OF))
    assert changed == {touched, ordered, str(new)}
    before = dump(clean_db, "customer_metrics")
    run = compute_metrics(clean_db, AS_OF, sorted(changed))
    assert run.customers == 3
    after = frame(
        clean_db, "SELECT customer_id::text AS cid, computed_at, total_orders FROM customer_metrics"
    )
    recomputed = set(after[after.computed_at > after.computed_at.min()].cid)
    assert recomputed == changed
    assert len(before) + 1 == len(after)
    # stale rows are picked up even without input changes
    assert set(changed_customer_ids(clean_db, AS_OF + timedelta(days=2))) >= set(store.customer_ids)
