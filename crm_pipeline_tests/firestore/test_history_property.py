"""Property: whatever happens to a customer's history between runs, after a run Firestore holds
exactly PostgreSQL's orders, activities and notes, and a run with no change writes nothing."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from google.cloud import firestore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_pipeline.firestore.documents import ACTIVITIES, CUSTOMERS, NOTES, ORDERS
from crm_pipeline.firestore.mirror import MirrorSettings, sync_mirror
from crm_pipeline.firestore.verify import verify_customers
from crm_pipeline_tests.firestore.seed import customer_id, seed_customers

FAST = MirrorSettings(batch_size=10, threads=2, backoff_seconds=0.01)
CUSTOMER = 5

_STEPS = {
    "add_order": "INSERT INTO orders (customer_id, source, external_id, created_at, total_price, "
    "currency) VALUES (:c, 'shopify', 'p-' || gen_random_uuid(), now() - :n * interval '1 day', "
    ":n, 'USD')",
    "drop_order": "DELETE FROM orders WHERE id = (SELECT id FROM orders WHERE customer_id = :c "
    "ORDER BY id OFFSET :n % greatest(1, (SELECT count(*) FROM orders WHERE customer_id = :c)) "
    "LIMIT 1)",
    "refund_order": "UPDATE orders SET financial_status = 'refunded' WHERE id = (SELECT id FROM "
    "orders WHERE customer_id = :c ORDER BY id LIMIT 1)",
    "add_activity": "INSERT INTO customer_activities (customer_id, activity_type, occurred_at, "
    "properties, source, external_id) VALUES (:c, 'page_view', now() - :n * interval '1 hour', "
    "jsonb_build_object('n', :n), 'klaviyo', 'p-' || gen_random_uuid())",
    "drop_activity": "DELETE FROM customer_activities WHERE id = (SELECT min(id) FROM "
    "customer_activities WHERE customer_id = :c)",
    "edit_activity": "UPDATE customer_activities SET properties = jsonb_build_object('n', :n) "
    "WHERE id = (SELECT max(id) FROM customer_activities WHERE customer_id = :c)",
    "change_notes": "UPDATE customers SET notes = 'note ' || :n WHERE id = :c",
}


def _firestore_ids(client: firestore.Client, cid: str) -> dict[str, set[str]]:
    root = client.collection(CUSTOMERS).document(cid)
    return {
        name: {ref.id for ref in root.collection(name).list_documents()}
        for name in (ORDERS, ACTIVITIES, NOTES)
    }


def _postgres_ids(engine: sa.Engine, cid: str) -> dict[str, set[str]]:
    with engine.connect() as conn:

        def ids(table: str) -> set[str]:
            sql = f"SELECT id::text FROM {table} WHERE customer_id = :c"  # table from the list
            return set(conn.execute(sa.text(sql), {"c": cid}).scalars())

        return {
            ORDERS: ids("orders"),
            ACTIVITIES: ids("customer_activities"),
            NOTES: ids("customer_notes"),
        }


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    runs=st.lists(
        st.lists(st.tuples(st.sampled_from(sorted(_STEPS)), st.integers(0, 50)), max_size=5),
        min_size=1,
        max_size=3,
    )
)
def test_history_matches_postgres_after_every_run(
    clean_db: sa.Engine, firestore_client: firestore.Client, runs: list[list[tuple[str, int]]]
) -> None:
    cid = customer_id(CUSTOMER)
    with clean_db.connect() as conn:
        seeded = conn.execute(sa.text("SELECT count(*) FROM customers")).scalar_one()
    if not seeded:
        seed_customers(clean_db, CUSTOMER)
    for steps in runs:
        with clean_db.begin() as conn:
            for step, n in steps:
                params: dict[str, Any] = {"c": cid, "n": n}
                conn.execute(sa.text(_STEPS[step]), params)
        sync_mirror(clean_db, firestore_client, FAST)
        assert _firestore_ids(firestore_client, cid) == _postgres_ids(clean_db, cid)
        assert verify_customers(clean_db, firestore_client, [cid], sample=0).ok
        assert sync_mirror(clean_db, firestore_client, FAST).documents_written == 0
