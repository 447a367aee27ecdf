"""customer_segments rules, expiry with history, VIP status and manual tag segments; scores."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from crm_pipeline.analytics.metrics import compute_metrics
from crm_pipeline.analytics.scores import write_scores
from crm_pipeline.analytics.segments import INACTIVE_AFTER_DAYS, refresh_segments
from crm_pipeline_tests.analytics.seed import AS_OF, seed_store


def build(engine: sa.Engine, customers: int = 60, seed: int = 2, as_of=AS_OF) -> list[str]:
    store = seed_store(engine, customers=customers, seed=seed)
    compute_metrics(engine, as_of)
    write_scores(engine, as_of)
    refresh_segments(engine, as_of)
    return store.customer_ids


def rows(engine: sa.Engine, query: str, **params) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text(query), params).all()


def test_each_buyer_has_one_value_rfm_and_churn_segment(clean_db: sa.Engine) -> None:
    build(clean_db)
    per_family = rows(
        clean_db,
        "SELECT m.customer_id, split_part(s.segment_name, ':', 1) AS family, count(*)"
        " FROM customer_metrics m JOIN customer_segments s USING (customer_id)"
        " WHERE m.completed_orders > 0 AND s.segment_name LIKE '%:%'"
        "   AND s.segment_name NOT LIKE 'segment:%' GROUP BY 1, 2",
    )
    families = {}
    for _, family, count in per_family:
        assert count == 1
        families[family] = families.get(family, 0) + 1
    buyers = rows(clean_db, "SELECT count(*) FROM customer_metrics WHERE completed_orders > 0")
    n = buyers[0][0]
    assert families["value"] == families["rfm"] == families["churn_risk"] == n
    # every metrics row (buyer or not) has exactly one engagement segment
    assert families["engagement"] == n
    assert (
        rows(
            clean_db,
            "SELECT count(*) FROM customer_metrics m WHERE (SELECT count(*)"
            " FROM customer_segments s WHERE s.customer_id = m.customer_id"
            " AND s.segment_name LIKE 'engagement:%') <> 1",
        )[0][0]
        == 0
    )
    # non-buyers get no value / churn segments and no churn probability
    assert (
        rows(
            clean_db,
            "SELECT count(*) FROM customer_metrics m JOIN customer_segments s USING (customer_id)"
            " WHERE m.completed_orders = 0 AND s.segment_name ~ '^(value|rfm|churn_risk):'",
        )[0][0]
        == 0
    )
    assert (
        rows(
            clean_db,
            "SELECT count(*) FROM customer_metrics WHERE completed_orders = 0"
            " AND churn_probability IS NOT NULL",
        )[0][0]
        == 0
    )
    # system rows carry expiry, provenance and confidence
    bad = rows(
        clean_db,
        "SELECT * FROM customer_segments WHERE assigned_by <> 'manual'"
        " AND (expires_at <> CAST(:e AS timestamptz) OR assigned_at <> CAST(:a AS timestamptz))",
        e=AS_OF + timedelta(days=7),
        a=AS_OF,
    )
    assert bad == []
    assert {r[0] for r in rows(clean_db, "SELECT DISTINCT assigned_by FROM customer_segments")} >= {
        "system",
        "ml",
        "manual",
    }


def test_value_segments_follow_ltv_order(clean_db: sa.Engine) -> None:
    build(clean_db, customers=80, seed=4)
    ranked = rows(
        clean_db,
        "SELECT s.segment_name, min(m.lifetime_value), max(m.lifetime_value)"
        " FROM customer_segments s JOIN customer_metrics m USING (customer_id)"
        " WHERE s.segment_name LIKE 'value:%' GROUP BY 1",
    )
    bounds = {name: (lo, hi) for name, lo, hi in ranked}
    assert bounds["value:low"][1] <= bounds["value:medium"][0]
    assert bounds["value:medium"][1] <= bounds["value:high"][0]


def test_expired_assignments_are_removed_and_kept_in_history(clean_db: sa.Engine) -> None:
    ids = build(clean_db, customers=30, seed=8)
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customer_segments (customer_id, segment_name, segment_type,"
                " assigned_by, assigned_at, expires_at) VALUES"
                " (:a, 'promo:spring', 'custom', 'manual', :t, :t + interval '1 day'),"
                " (:b, 'promo:summer', 'custom', 'manual', :t, :t + interval '30 days')"
            ),
            {"a": ids[0], "b": ids[1], "t": AS_OF},
        )
    later = AS_OF + timedelta(days=8)
    compute_metrics(clean_db, later)
    write_scores(clean_db, later)
    summary = refresh_segments(clean_db, later)
    assert summary["expired_removed"] > 0
    live = {r[0] for r in rows(clean_db, "SELECT segment_name FROM customer_segments")}
    assert "promo:spring" not in live and "promo:summer" in live
    history = rows(
        clean_db,
        "SELECT segment_name, assigned_at, expires_at FROM customer_segment_history"
        " WHERE customer_id = :a AND segment_name = 'promo:spring'",
        a=ids[0],
    )
    assert len(history) == 1 and history[0][1] == AS_OF
    # system assignments from the first run expired too and were re-issued with a new expiry
    assert (
        rows(
            clean_db,
            "SELECT count(*) FROM customer_segments WHERE assigned_by <> 'manual'"
            " AND expires_at <> CAST(:e AS timestamptz)",
            e=later + timedelta(days=7),
        )[0][0]
        == 0
    )
    assert rows(clean_db, "SELECT count(*) FROM customer_segment_history")[0][0] > 1


def test_vip_status_follows_rule_but_respects_manual_status(clean_db: sa.Engine) -> None:
    build(clean_db, customers=80, seed=9)
    vips = {
        str(r[0])
        for r in rows(
            clean_db, "SELECT customer_id FROM customer_segments WHERE segment_name = 'vip'"
        )
    }
    assert vips
    statuses = dict(rows(clean_db, "SELECT id::text, status FROM customers"))
    for cid in vips:
        assert statuses[cid] == "vip" or statuses[cid] in ("inactive", "pending")
    assert all(cid in vips for cid, s in statuses.items() if s == "vip")

    pinned, demoted = sorted(vips)[0], sorted(vips)[-1]
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE customers SET status = 'active', status_set_by = 'manual' WHERE id = :i"
            ),
            {"i": pinned},
        )
        # wipe the demoted customer's orders so the rule no longer holds
        conn.execute(sa.text("DELETE FROM orders WHERE customer_id = :i"), {"i": demoted})
        outsider = conn.execute(
            sa.text(
                "SELECT id::text FROM customers WHERE status = 'active' AND id <> ALL(:v) LIMIT 1"
            ),
            {"v": list(vips)},
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE customers SET status = 'vip', status_set_by = 'manual' WHERE id = :i"),
            {"i": outsider},
        )
    compute_metrics(clean_db, AS_OF)
    write_scores(clean_db, AS_OF)
    refresh_segments(clean_db, AS_OF)
    statuses = dict(rows(clean_db, "SELECT id::text, status FROM customers"))
    assert statuses[pinned] == "active"  # manual status never overridden
    assert statuses[outsider] == "vip"  # manual VIP kept although the rule does not hold
    if demoted != pinned:
        # system VIP removed when the rule stops holding; with its orders gone the customer may
        # also have gone unseen for INACTIVE_AFTER_DAYS (docs/metrics.md#status)
        idle = rows(
            clean_db,
            "SELECT greatest(c.created_at, c.last_active_at, max(x.occurred_at)) "
            "< CAST(:t AS timestamptz) - make_interval(days => :d) FROM customers c "
            "LEFT JOIN customer_activities x ON x.customer_id = c.id WHERE c.id = :i "
            "GROUP BY c.id",
            t=AS_OF,
            d=INACTIVE_AFTER_DAYS,
            i=demoted,
        )[0][0]
        assert statuses[demoted] == ("inactive" if idle else "active")


def test_manual_tag_segments(clean_db: sa.Engine) -> None:
    ids = build(clean_db, customers=30, seed=12)
    tagged = {
        str(r[0])
        for r in rows(
            clean_db, "SELECT id FROM customers WHERE 'segment:wholesale-east' = ANY(tags)"
        )
    }
    seg = rows(
        clean_db,
        "SELECT customer_id::text, segment_type, assigned_by, expires_at FROM customer_segments"
        " WHERE segment_name = 'segment:wholesale-east'",
    )
    assert {r[0] for r in seg} == tagged and tagged
    assert all(r[1] == "custom" and r[2] == "manual" and r[3] is None for r in seg)
    victim = sorted(tagged)[0]
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE customers SET tags = array_remove(tags, 'segment:wholesale-east')"
                " WHERE id = :i"
            ),
            {"i": victim},
        )
    refresh_segments(clean_db, AS_OF)
    after = {
        r[0]
        for r in rows(
            clean_db,
            "SELECT customer_id::text FROM customer_segments"
            " WHERE segment_name = 'segment:wholesale-east'",
        )
    }
    assert after == tagged - {victim}
    assert ids


def test_scores_written_with_klaviyo_agreement(clean_db: sa.Engine) -> None:
    seed_store(clean_db, customers=120, seed=21)
    compute_metrics(clean_db, AS_OF)
    meta = write_scores(clean_db, AS_OF)
    assert meta["method"] in ("mbg_nbd", "bg_nbd", "heuristic")
    assert meta["klaviyo_agreement"]["customers_compared"] > 0
    assert "churn_spearman" in meta["klaviyo_agreement"]
    bad = rows(
        clean_db,
        "SELECT count(*) FROM customer_metrics WHERE completed_orders > 0 AND"
        " (churn_probability IS NULL OR scoring_method IS NULL OR predicted_ltv < 0"
        "  OR predicted_purchases_90d < 0)",
    )
    assert bad[0][0] == 0


def test_scores_without_klaviyo_predictions(clean_db: sa.Engine) -> None:
    """The default profile pull stores no predictive_analytics (docs/connecting-klaviyo.md):
    scores are written all the same and the comparison compares nobody."""
    seed_store(clean_db, customers=120, seed=21)
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE customers SET custom_attributes = "
                "custom_attributes #- '{klaviyo,predictive_analytics}'"
            )
        )
    compute_metrics(clean_db, AS_OF)
    meta = write_scores(clean_db, AS_OF)
    assert meta["klaviyo_agreement"] == {"customers_compared": 0}
    scored = "SELECT count(*) FROM customer_metrics WHERE churn_probability IS NOT NULL"
    assert rows(clean_db, scored)[0][0] > 0
