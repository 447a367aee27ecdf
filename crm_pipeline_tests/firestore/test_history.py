"""Complete history in the mirror: every order, activity and note, incremental per subdocument."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.firestore.documents import ACTIVITIES, CUSTOMERS, NOTES, ORDERS
from crm_pipeline.firestore.mirror import MirrorSettings, check_mirror_consistency, sync_mirror
from crm_pipeline_tests.firestore.seed import customer_id, seed_customers, seed_history

FAST = MirrorSettings(batch_size=10, threads=2, backoff_seconds=0.01)
HEAVY = 2  # customer 2 gets 150 orders and 500 activities besides its seeded 2 orders, 2 events
N = 12


@pytest.fixture
def heavy(clean_db: sa.Engine) -> sa.Engine:
    seed_customers(clean_db, N)
    seed_history(clean_db, HEAVY, HEAVY, orders=150, activities=500)
    return clean_db


def _collection(client: firestore.Client, cid: str, name: str) -> Any:
    return client.collection(CUSTOMERS).document(cid).collection(name)


def _ids_by_time(engine: sa.Engine, sql: str, cid: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), {"c": cid}).scalars())


def _paged(query: Any, page: int) -> list[Any]:
    """Read a query the way the app does: pages of `page` with startAfter the last snapshot."""
    snaps: list[Any] = []
    while True:
        batch = list((query.start_after(snaps[-1]) if snaps else query).limit(page).stream())
        snaps.extend(batch)
        if len(batch) < page:
            return snaps


def _execute(engine: sa.Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def test_every_order_and_activity_is_mirrored_in_time_order(
    heavy: sa.Engine, firestore_client: firestore.Client
) -> None:
    cid = customer_id(HEAVY)
    first = sync_mirror(heavy, firestore_client, FAST)
    assert first.failed == 0

    orders = _paged(
        _collection(firestore_client, cid, ORDERS).order_by(
            "created_at", direction=firestore.Query.DESCENDING
        ),
        page=40,
    )
    expected_orders = _ids_by_time(
        heavy, "SELECT id::text FROM orders WHERE customer_id = :c ORDER BY created_at DESC", cid
    )
    assert len(expected_orders) == 152
    assert [s.id for s in orders] == expected_orders
    times = [s.to_dict()["created_at"] for s in orders]
    assert times == sorted(times, reverse=True)

    activities = _paged(
        _collection(firestore_client, cid, ACTIVITIES).order_by(
            "occurred_at", direction=firestore.Query.DESCENDING
        ),
        page=120,
    )
    expected_activities = _ids_by_time(
        heavy,
        "SELECT id::text FROM customer_activities WHERE customer_id = :c ORDER BY occurred_at DESC",
        cid,
    )
    assert len(expected_activities) == 502
    assert [s.id for s in activities] == expected_activities
    occurred = [s.to_dict()["occurred_at"] for s in activities]
    assert occurred == sorted(occurred, reverse=True)
    assert check_mirror_consistency(heavy, firestore_client).ok

    again = sync_mirror(heavy, firestore_client, FAST)
    assert (again.written, again.documents_written, again.unchanged) == (0, 0, N)


def test_removed_and_changed_history_writes_only_those_subdocuments(
    heavy: sa.Engine, firestore_client: firestore.Client
) -> None:
    cid = customer_id(HEAVY)
    sync_mirror(heavy, firestore_client, FAST)
    gone_order = md5_uuid(f"crm-history-order-{HEAVY}-77")
    with heavy.begin() as conn:
        gone_activity = conn.execute(
            sa.text("DELETE FROM customer_activities WHERE external_id = :e RETURNING id::text"),
            {"e": f"hist-evt-{HEAVY}-300"},
        ).scalar_one()
        conn.execute(sa.text("DELETE FROM orders WHERE id = :o"), {"o": gone_order})
    deleted = sync_mirror(heavy, firestore_client, FAST)
    # 2 deletes, plus the customer document and its address (its counts changed)
    assert (deleted.written, deleted.documents_written) == (1, 2 + 2)
    assert not _collection(firestore_client, cid, ORDERS).document(gone_order).get().exists
    assert not _collection(firestore_client, cid, ACTIVITIES).document(gone_activity).get().exists
    assert len(list(_collection(firestore_client, cid, ACTIVITIES).list_documents())) == 501

    _execute(
        heavy,
        "UPDATE customer_activities SET properties = '{\"n\": -1}' WHERE external_id = :e",
        e=f"hist-evt-{HEAVY}-10",
    )
    changed = sync_mirror(heavy, firestore_client, FAST)
    assert (changed.written, changed.documents_written) == (1, 1)  # that activity only
    assert check_mirror_consistency(heavy, firestore_client).ok
    with heavy.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT collection, count(*) FROM firestore_mirror_subdocuments "
                "WHERE customer_id = :c GROUP BY 1"
            ),
            {"c": cid},
        ).all()
    assert dict(rows) == {ORDERS: 151, ACTIVITIES: 501}


def test_tampered_history_is_drift_and_a_repair_restores_it(
    heavy: sa.Engine, firestore_client: firestore.Client
) -> None:
    from crm_pipeline.firestore.mirror import repair_mirror

    cid = customer_id(HEAVY)
    sync_mirror(heavy, firestore_client, FAST)
    activities = _collection(firestore_client, cid, ACTIVITIES)
    deep = sorted(ref.id for ref in activities.list_documents())[400]
    activities.document(deep).update({"activity_type": "tampered"})
    _collection(firestore_client, cid, NOTES).document("999999").set({"body": "stray"})
    report = check_mirror_consistency(heavy, firestore_client)
    assert report.mismatched == [cid]
    repaired = repair_mirror(heavy, firestore_client, report.drifted_ids, FAST)
    assert repaired.failed == 0
    assert not _collection(firestore_client, cid, NOTES).document("999999").get().exists
    assert check_mirror_consistency(heavy, firestore_client).ok


def test_notes_history_is_a_subcollection(
    clean_db: sa.Engine, firestore_client: firestore.Client
) -> None:
    seed_customers(clean_db, 3)
    cid = customer_id(3)  # seeded with notes 'Prefers email'
    _execute(clean_db, "UPDATE customers SET notes = 'Ships to the office' WHERE id = :c", c=cid)
    _execute(clean_db, "UPDATE customers SET tags = '{vip}' WHERE id = :c", c=cid)  # no new note
    sync_mirror(clean_db, firestore_client, FAST)
    notes = [
        s.to_dict()
        for s in _collection(firestore_client, cid, NOTES)
        .order_by("created_at", direction=firestore.Query.DESCENDING)
        .stream()
    ]
    assert [(n["kind"], n["body"]) for n in notes] == [
        ("notes", "Ships to the office"),
        ("notes", "Prefers email"),
    ]
    assert check_mirror_consistency(clean_db, firestore_client).ok


def md5_uuid(text: str) -> str:
    import hashlib
    import uuid

    return str(uuid.UUID(hashlib.md5(text.encode()).hexdigest()))


def test_history_hash_from_built_subdocuments_equals_the_sql_one(heavy: sa.Engine) -> None:
    """A first sync hashes histories in Python, later runs in SQL: they must agree, or every
    customer would look changed on the second run."""
    from crm_pipeline.firestore.history import (
        EMPTY_HISTORY,
        fetch_history,
        history_hash,
        history_hashes,
    )

    _execute(heavy, "DELETE FROM customer_activities WHERE customer_id = :c", c=customer_id(6))
    _execute(heavy, "DELETE FROM orders WHERE customer_id = :c", c=customer_id(6))
    _execute(heavy, "DELETE FROM customer_notes WHERE customer_id = :c", c=customer_id(6))
    ids = [customer_id(i) for i in range(1, N + 1)]
    with heavy.connect() as conn:
        in_sql = history_hashes(conn, ids)
        built = fetch_history(conn, ids)
    assert {cid: history_hash(history) for cid, history in built.items()} == in_sql
    assert in_sql[customer_id(6)] == EMPTY_HISTORY
    assert len(set(in_sql.values())) == N
