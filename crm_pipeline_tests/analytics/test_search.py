"""search_customers: fuzzy matching, filters, sort and keyset pagination; the crm_analyst role."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from crm_pipeline.analytics.metrics import compute_metrics
from crm_pipeline.analytics.search import SearchError, render_table, search
from crm_pipeline.analytics.segments import refresh_segments
from crm_pipeline_tests.analytics.seed import AS_OF, seed_store


@pytest.fixture
def store(clean_db: sa.Engine) -> sa.Engine:
    seed_store(clean_db, customers=120, seed=31)
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customers (email, first_name, last_name, phone_normalized, status)"
                " VALUES ('jsmith@corp.io', 'Jon', 'Smith', '+447700900123', 'vip'),"
                " ('zed@corp.io', 'Zed', 'Zimmerman', NULL, 'active')"
            )
        )
    compute_metrics(clean_db, AS_OF)
    refresh_segments(clean_db, AS_OF)
    return clean_db


def all_pages(engine: sa.Engine, page_size: int, **kwargs) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        page = search(engine, page_size=page_size, cursor=cursor, **kwargs)
        pages.append(page.rows)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def test_fuzzy_name_finds_jon_smith_first(store: sa.Engine) -> None:
    page = search(store, "jon smth", page_size=5)
    assert page.rows[0]["full_name"] == "Jon Smith"
    assert all(r["score"] >= page.rows[-1]["score"] for r in page.rows)
    assert "Zimmerman" not in {r["full_name"].split()[-1] for r in page.rows}
    # email and phone fragments match too
    assert search(store, "jsmith@corp").rows[0]["email"] == "jsmith@corp.io"
    assert search(store, "7700 900123").rows[0]["phone"] == "+447700900123"
    assert render_table(page.rows).row_count == len(page.rows)


def test_filters(store: sa.Engine) -> None:
    vip = search(store, filters={"status": "vip"}, page_size=1000).rows
    assert vip and all(r["status"] == "vip" for r in vip)
    tagged = search(store, filters={"tags": ["promo", "b2b"]}, page_size=1000).rows
    assert tagged and all({"promo", "b2b"} <= set(r["tags"]) for r in tagged)
    german = {
        r["customer_id"] for r in search(store, filters={"country": "de"}, page_size=1000).rows
    }
    with store.connect() as conn:
        expected = {
            r[0]
            for r in conn.execute(
                sa.text("SELECT customer_id FROM customer_addresses WHERE country_code = 'DE'")
            )
        }
    assert german == expected
    gold = search(store, filters={"attributes": {"plan": "gold"}}, page_size=1000).rows
    assert gold and len(gold) < 122
    engaged = search(store, filters={"segment": "engagement:engaged"}, page_size=1000).rows
    with store.connect() as conn:
        n = conn.execute(
            sa.text(
                "SELECT count(*) FROM customer_segments WHERE segment_name = 'engagement:engaged'"
            )
        ).scalar_one()
    assert len(engaged) == n
    recent = search(
        store, filters={"created_from": "2024-06-01", "created_to": "2025-01-31"}, page_size=1000
    ).rows
    assert all("2024-06-01" <= r["created_at"].date().isoformat() <= "2025-01-31" for r in recent)
    shopify = search(
        store, filters={"source": "shopify", "customer_type": ["guest"]}, page_size=1000
    )
    assert all(r["customer_type"] == "guest" for r in shopify.rows)


@pytest.mark.parametrize(
    "sort",
    ["-lifetime_value", "churn_probability,-full_name", "-engagement_score,created_at", "email"],
)
def test_pages_have_no_duplicates_or_gaps(store: sa.Engine, sort: str) -> None:
    everything = search(store, sort=sort, page_size=1000).rows
    pages = all_pages(store, page_size=7, sort=sort)
    flat = [r["customer_id"] for page in pages for r in page]
    assert flat == [r["customer_id"] for r in everything]
    assert len(flat) == len(set(flat)) == 122
    assert all(len(p) == 7 for p in pages[:-1])


def test_sort_order_on_calculated_fields(store: sa.Engine) -> None:
    rows = search(store, sort="-lifetime_value,full_name", page_size=1000).rows
    values = [r["lifetime_value"] if r["lifetime_value"] is not None else -1 for r in rows]
    assert values == sorted(values, reverse=True)
    fuzzy_pages = all_pages(store, page_size=3, query="smith", sort="-score,full_name")
    flat = [r["customer_id"] for p in fuzzy_pages for r in p]
    assert len(flat) == len(set(flat)) > 3


def test_bad_input_is_a_search_error(store: sa.Engine) -> None:
    with pytest.raises(SearchError, match="sort"):
        search(store, sort="-password")
    with pytest.raises(SearchError, match="filter"):
        search(store, filters={"drop table": 1})
    page = search(store, sort="email", page_size=5)
    with pytest.raises(SearchError, match="cursor"):
        search(store, sort="-email", page_size=5, cursor=page.next_cursor)
    with pytest.raises(SearchError, match="cursor"):
        search(store, sort="email", page_size=5, cursor="not-a-cursor")
    # quotes in values are data, not SQL
    assert search(store, "o'brien'); drop table customers; --").rows is not None
    assert search(store, filters={"status": "vip' OR '1'='1"}).rows == []


def test_analyst_role_reads_but_cannot_write_or_see_payloads(store: sa.Engine) -> None:
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO webhook_events (source, topic, delivery_id, payload)"
                " VALUES ('shopify', 'customers/create', 'd-1', '{\"email\": \"x@y.z\"}')"
            )
        )
    with store.connect() as conn:
        conn.execute(sa.text("SET ROLE crm_analyst"))
        assert conn.execute(sa.text("SELECT count(*) FROM customers")).scalar_one() == 122
        assert conn.execute(sa.text("SELECT count(*) FROM customer_360")).scalar_one() == 122
        assert conn.execute(sa.text("SELECT total_customers FROM customer_stats")).scalar_one()
        assert conn.execute(sa.text("SELECT topic FROM webhook_events_summary")).scalar_one()
        assert conn.execute(sa.text("SELECT status FROM webhook_events")).scalar_one() == "pending"
        assert search(conn, "jon smth").rows[0]["full_name"] == "Jon Smith"
        conn.rollback()
    forbidden = [
        "SELECT payload FROM webhook_events",
        "SELECT headers FROM webhook_events",
        "SELECT * FROM webhook_events",
        "UPDATE customers SET notes = 'x'",
        "INSERT INTO customer_segments (customer_id, segment_name, segment_type)"
        " SELECT id, 'x', 'custom' FROM customers LIMIT 1",
        "DELETE FROM customer_metrics",
        "TRUNCATE customers",
        "CREATE TABLE analyst_scratch (id int)",
    ]
    for statement in forbidden:
        with store.connect() as conn:
            conn.execute(sa.text("SET ROLE crm_analyst"))
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text(statement))
            conn.rollback()
    with store.connect() as conn:
        rolcanlogin = conn.execute(
            sa.text("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'crm_analyst'")
        ).scalar_one()
    assert rolcanlogin is False


@pytest.mark.parametrize("sort", ["-lifetime_value", "-churn_probability,full_name"])
def test_metric_listing_fast_path_keeps_customers_without_metrics(
    store: sa.Engine, sort: str
) -> None:
    # 0007 answers descending metric listings from the inner join when the page allows it;
    # customers without metrics must still come last, on every page, exactly once
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "DELETE FROM customer_metrics WHERE customer_id IN"
                " (SELECT id FROM customers ORDER BY id LIMIT 30)"
            )
        )
    everything = search(store, sort=sort, page_size=1000).rows
    pages = all_pages(store, page_size=10, sort=sort)
    flat = [r["customer_id"] for page in pages for r in page]
    assert flat == [r["customer_id"] for r in everything]
    assert len(flat) == len(set(flat)) == 122
    key = sort.split(",")[0].lstrip("-")
    missing = [r[key] is None for r in everything]
    assert sum(missing) >= 30 and missing == sorted(missing)
    vip = search(store, filters={"status": "vip"}, sort=sort, page_size=2).rows
    assert all(r["status"] == "vip" for r in vip)


def test_trigram_thresholds_do_not_leak_into_the_session(store: sa.Engine) -> None:
    with store.connect() as conn:
        search(conn, "jon smth")
        value = conn.execute(sa.text("SHOW pg_trgm.similarity_threshold")).scalar_one()
    assert float(value) == pytest.approx(0.3)
