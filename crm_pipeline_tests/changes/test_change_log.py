"""The change log: triggers record every touched customer, windows respect limits and the stage
before, derived writes are not fed back, consumed rows are pruned."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_pipeline.analytics.segments import refresh_segments
from crm_pipeline.changes.buckets import advance_covered
from crm_pipeline.changes.log import (
    CORE_CONSUMERS,
    METRICS,
    MIRROR,
    SEGMENTS,
    ChangeWindow,
    advance,
    horizon,
    prune,
    read_window,
    safe_horizon,
)


def add_customer(engine: sa.Engine) -> str:
    cid = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO customers (id, email) VALUES (:id, :email)"),
            {"id": cid, "email": f"{cid}@example.com"},
        )
    return cid


def logged(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT customer_id::text, origin FROM customer_changes"))
        return sorted(rows.tuples().all())


def test_windows_follow_limits_and_the_stage_before(clean_db: sa.Engine) -> None:
    first, second, third = (add_customer(clean_db) for _ in range(3))
    with clean_db.begin() as conn:
        window = read_window(conn, METRICS, limit=1)
        assert window.customer_ids == [first]  # whole transactions, oldest first
        # segments may not pass where metrics got
        assert read_window(conn, SEGMENTS).customer_ids == []
        advance(conn, window)
        assert read_window(conn, SEGMENTS).customer_ids == [first]
        rest = read_window(conn, METRICS)
        assert sorted(rest.customer_ids) == sorted([second, third])
        advance(conn, rest)
        assert read_window(conn, METRICS).customer_ids == []


def test_every_watched_write_is_logged_but_a_segment_refresh_is_not(clean_db: sa.Engine) -> None:
    cid = add_customer(clean_db)
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orders (id, customer_id, source, external_id, created_at, "
                "financial_status, total_price, total_refunded) VALUES (:oid, :id, 'shopify', "
                "'o-1', now(), 'paid', 10, 0)"
            ),
            {"oid": str(uuid.uuid4()), "id": cid},
        )
        conn.execute(sa.text("UPDATE customers SET deleted_at = now() WHERE id = :id"), {"id": cid})
    assert logged(clean_db) == [(cid, "customers"), (cid, "customers"), (cid, "orders")]
    with clean_db.begin() as conn:
        conn.execute(sa.text("TRUNCATE customer_changes"))
        conn.execute(sa.text("UPDATE customers SET deleted_at = NULL, tags = '{segment:gold}'"))
        conn.execute(sa.text("TRUNCATE customer_changes"))
    refresh_segments(clean_db, customer_ids=[cid])  # writes the tag's manual segment
    with clean_db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM customer_segments")).scalar_one() == 1
    assert logged(clean_db) == []


def test_rows_are_pruned_once_every_stage_passed_them(clean_db: sa.Engine) -> None:
    add_customer(clean_db)
    with clean_db.begin() as conn:
        horizon = safe_horizon(conn)
        advance(conn, ChangeWindow(METRICS, 0, horizon, []))
        advance(conn, ChangeWindow(SEGMENTS, 0, horizon, []))
        assert prune(conn) == 0  # the mirror has not run yet
        advance(conn, ChangeWindow(MIRROR, 0, horizon, []))
        assert prune(conn) == 1


@settings(
    max_examples=40,
    deadline=None,
    # clean_db empties the database once; each example sets every horizon it reads
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    # consumer horizons around the position, in pipeline order (metrics >= segments >= mirror)
    offsets=st.lists(st.integers(-50, 50), min_size=3, max_size=3).map(
        lambda xs: sorted(xs, reverse=True)
    ),
    back=st.integers(0, 20),
)
def test_a_bucketed_run_moves_each_horizon_to_its_position_never_back(
    clean_db: sa.Engine, offsets: list[int], back: int
) -> None:
    with clean_db.begin() as conn:
        position = safe_horizon(conn) - back  # read before the buckets; time went on since
        conn.execute(sa.text("DELETE FROM change_consumers"))
        for consumer, offset in zip(CORE_CONSUMERS, offsets, strict=True):
            advance(conn, ChangeWindow(consumer, 0, max(0, position + offset), []))
        before = {c: horizon(conn, c) for c in CORE_CONSUMERS}
    advance_covered(clean_db, position)
    with clean_db.connect() as conn:
        after = [horizon(conn, c) for c in CORE_CONSUMERS]
    assert after == [max(before[c], position) for c in CORE_CONSUMERS]
    assert after == sorted(after, reverse=True)  # each stage still reads up to the one before
