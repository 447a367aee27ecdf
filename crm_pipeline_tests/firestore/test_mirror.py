"""The Firestore mirror against the real emulator and a real PostgreSQL."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.firestore_mirror.assets import firestore_customer_mirror
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource
from crm_pipeline.firestore.documents import (
    ACTIVITIES,
    ADDRESSES,
    CUSTOMERS,
    ORDERS,
    segment_document_id,
)
from crm_pipeline.firestore.emulator import FirestoreEmulator
from crm_pipeline.firestore.lost import FirestoreEmulatorLost
from crm_pipeline.firestore.mirror import (
    CustomerWrite,
    FirestoreWrite,
    FirestoreWriter,
    MirrorSettings,
    check_mirror_consistency,
    repair_mirror,
    sync_dashboard,
    sync_mirror,
)
from crm_pipeline_tests.firestore.seed import customer_id, seed_customers

N = 36
MONEY = re.compile(r"^-?\d+\.\d{2}$")
FAST = MirrorSettings(batch_size=10, threads=2, backoff_seconds=0.01)
NOW_RETRY = MirrorSettings(batch_size=10, threads=2, backoff_seconds=0.01, retry_delay=timedelta(0))


@pytest.fixture
def seeded(clean_db: sa.Engine) -> sa.Engine:
    seed_customers(clean_db, N)
    return clean_db


def _doc(client: firestore.Client, cid: str) -> dict[str, Any] | None:
    return client.collection(CUSTOMERS).document(cid).get().to_dict()


def _sub_ids(client: firestore.Client, cid: str, name: str) -> set[str]:
    root = client.collection(CUSTOMERS).document(cid)
    return {ref.id for ref in root.collection(name).list_documents()}


def _logs(engine: sa.Engine, run_id: str) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT customer_id::text, operation, firestore_status, error_message, "
                "retry_count, data_snapshot FROM customer_sync_logs WHERE run_id = :r"
            ),
            {"r": run_id},
        ).all()


def _execute(engine: sa.Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def _no_nan(value: Any) -> None:
    if isinstance(value, float):
        assert not math.isnan(value) and not math.isinf(value)
    elif isinstance(value, dict):
        for item in value.values():
            _no_nan(item)
    elif isinstance(value, list):
        for item in value:
            _no_nan(item)


def test_full_sync_writes_one_document_per_live_customer(
    seeded: sa.Engine, firestore_client: firestore.Client
) -> None:
    _execute(
        seeded,
        "UPDATE customer_metrics SET open_rate = 'NaN' WHERE customer_id = :c",
        c=customer_id(10),
    )
    summary = sync_mirror(seeded, firestore_client, FAST)
    assert (summary.considered, summary.written, summary.failed) == (N, N, 0)
    assert len(list(firestore_client.collection(CUSTOMERS).list_documents())) == N
    assert summary.docs_per_s > 0

    # customer 10: vip, two addresses, 2 orders, 4 activities, segments high_value (10 % 3 == 1
    # is at_risk), NaN open rate.
    cid = customer_id(10)
    doc = _doc(firestore_client, cid)
    assert doc is not None
    with seeded.connect() as conn:
        created_at = conn.execute(
            sa.text("SELECT created_at FROM customers WHERE id = :c"), {"c": cid}
        ).scalar_one()
    assert isinstance(doc["created_at"], datetime) and doc["created_at"].tzinfo is not None
    assert doc["created_at"] == created_at  # microseconds survive
    assert isinstance(doc["mirrored_at"], datetime)
    assert doc["is_vip"] is True and doc["status"] == "vip"
    assert doc["initials"] == "BS"
    assert doc["email"] == "customer10@example.com"
    assert doc["internal_notes"] is None and doc["notes"] is None
    metrics = doc["metrics"]
    for key in ("lifetime_value", "average_order_value", "total_spent", "net_revenue"):
        assert MONEY.match(metrics[key]), (key, metrics[key])
    assert metrics["lifetime_value"] == "59.97"
    assert metrics["open_rate"] is None  # NaN in Postgres
    assert isinstance(metrics["engagement_score"], float)
    assert isinstance(metrics["churn_probability"], float)
    assert metrics["risk_level"] in ("low", "medium", "high")
    assert metrics["predicted_next_order_date"] == "2025-07-11"
    assert isinstance(metrics["last_order_at"], datetime)
    assert [s["name"] for s in doc["segments"]] == ["at_risk"]
    assert isinstance(doc["segments"][0]["expires_at"], datetime)
    assert {(s["source"], s["external_id"]) for s in doc["sources"]} == {
        ("shopify", "gid-10"),
        ("klaviyo", "kl-10"),
    }
    assert doc["marketing"] == {"accepts_email": True, "accepts_sms": True}
    assert doc["default_address"]["city"] == "Springfield"
    assert doc["counts"] == {"addresses": 1, "orders": 2, "activities": 4}
    assert re.fullmatch(r"[0-9a-f]{64}", doc["content_hash"])
    _no_nan(doc)

    orders = {
        s.id: s.to_dict()
        for s in firestore_client.collection(CUSTOMERS).document(cid).collection(ORDERS).stream()
    }
    assert len(orders) == 2
    refunded = next(o for o in orders.values() if o["financial_status"] == "refunded")
    assert refunded["status"] == "refunded" and refunded["total_price"] == "39.98"
    assert isinstance(refunded["created_at"], datetime)
    assert refunded["line_items"][0]["price"] == "19.99"  # 9.995 * 2 rounded by numeric(14,2)
    assert len(_sub_ids(firestore_client, cid, ACTIVITIES)) == 4
    activity = next(
        firestore_client.collection(CUSTOMERS).document(cid).collection(ACTIVITIES).stream()
    ).to_dict()
    assert isinstance(activity["occurred_at"], datetime)
    assert activity["properties"]["__"] == "empty key"  # '' is not a valid Firestore field
    assert len(_sub_ids(firestore_client, cid, ADDRESSES)) == 1
    # The admin staff see internal notes: customer 4 has one.
    assert _doc(firestore_client, customer_id(4))["internal_notes"] == "Called about a refund"

    logs = _logs(seeded, summary.run_id)
    assert len(logs) == N and {row.operation for row in logs} == {"upsert"}
    assert all(row.data_snapshot is None for row in logs)


def test_second_run_writes_nothing_and_one_change_writes_one(
    seeded: sa.Engine, firestore_client: firestore.Client
) -> None:
    sync_mirror(seeded, firestore_client, FAST)
    again = sync_mirror(seeded, firestore_client, FAST)
    assert (again.written, again.unchanged, again.documents_written) == (0, N, 0)
    assert _logs(seeded, again.run_id) == []

    cid = customer_id(7)
    _execute(
        seeded, "UPDATE customer_metrics SET engagement_score = 99.5 WHERE customer_id = :c", c=cid
    )
    changed = sync_mirror(seeded, firestore_client, FAST)
    assert (changed.written, changed.unchanged) == (1, N - 1)
    # 1 customer document + its address; its orders and activities did not change
    assert changed.documents_written == 1 + 1
    assert [row.customer_id for row in _logs(seeded, changed.run_id)] == [cid]
    assert _doc(firestore_client, cid)["metrics"]["engagement_score"] == 99.5


def test_removed_subdocuments_are_deleted(
    seeded: sa.Engine, firestore_client: firestore.Client
) -> None:
    cid = customer_id(5)  # 1 order, 5 activities
    sync_mirror(seeded, firestore_client, FAST)
    assert len(_sub_ids(firestore_client, cid, ACTIVITIES)) == 5
    _execute(
        seeded,
        "DELETE FROM customer_activities WHERE customer_id = :c AND external_id = 'evt-5-1'",
        c=cid,
    )
    summary = sync_mirror(seeded, firestore_client, FAST)
    assert summary.written == 1
    assert len(_sub_ids(firestore_client, cid, ACTIVITIES)) == 4


@pytest.mark.parametrize(
    ("change", "operation"),
    [
        ("UPDATE customers SET deleted_at = now() WHERE id = :c", "delete"),
        (
            "UPDATE customers SET redacted_at = now(), email = NULL, phone = NULL, "
            "phone_normalized = NULL, first_name = NULL, last_name = NULL WHERE id = :c",
            "redact",
        ),
        ("UPDATE customers SET merged_into = :other WHERE id = :c", "delete"),
        ("DELETE FROM customers WHERE id = :c", "delete"),
    ],
    ids=["soft-delete", "redaction", "merge", "hard-delete"],
)
def test_customers_no_longer_live_lose_document_and_subcollections(
    seeded: sa.Engine, firestore_client: firestore.Client, change: str, operation: str
) -> None:
    cid = customer_id(3)  # 3 orders, 3 activities, 1 address
    sync_mirror(seeded, firestore_client, FAST)
    assert len(_sub_ids(firestore_client, cid, ORDERS)) == 3
    _execute(seeded, change, c=cid, other=customer_id(4))
    summary = sync_mirror(seeded, firestore_client, FAST)
    assert (summary.deleted, summary.written, summary.failed) == (1, 0, 0)
    assert not firestore_client.collection(CUSTOMERS).document(cid).get().exists
    for name in (ADDRESSES, ORDERS, ACTIVITIES):
        assert _sub_ids(firestore_client, cid, name) == set()
    assert cid not in {ref.id for ref in firestore_client.collection(CUSTOMERS).list_documents()}
    with seeded.connect() as conn:
        assert (
            conn.execute(
                sa.text("SELECT count(*) FROM firestore_mirror_state WHERE customer_id = :c"),
                {"c": cid},
            ).scalar_one()
            == 0
        )
    logs = _logs(seeded, summary.run_id)
    assert [(r.customer_id, r.operation, r.firestore_status) for r in logs] == [
        (cid, operation, "success")
    ]
    assert sync_mirror(seeded, firestore_client, FAST).deleted == 0


def test_injected_write_failure_is_logged_and_retried_next_run(
    seeded: sa.Engine, firestore_client: firestore.Client
) -> None:
    target = customer_id(6)
    summary = sync_mirror(
        seeded, firestore_client, FAST, fail_write=lambda cid, attempt: cid == target
    )
    assert (summary.written, summary.failed, summary.failed_ids) == (N - 1, 1, [target])
    assert not firestore_client.collection(CUSTOMERS).document(target).get().exists
    failed = [r for r in _logs(seeded, summary.run_id) if r.firestore_status == "failed"]
    assert len(failed) == 1 and failed[0].customer_id == target
    assert "FAILED_PRECONDITION" in failed[0].error_message
    assert failed[0].retry_count == FAST.max_attempts - 1
    assert failed[0].data_snapshot["customer"]["customer_id"] == target
    with seeded.connect() as conn:
        state = conn.execute(
            sa.text(
                "SELECT status, retry_count, next_attempt_at, content_hash, last_error "
                "FROM firestore_mirror_state WHERE customer_id = :c"
            ),
            {"c": target},
        ).one()
    assert state.status == "failed" and state.retry_count == 1 and state.content_hash is None
    assert state.next_attempt_at > datetime.now(UTC)

    # Not yet due: the next run leaves it alone.
    deferred = sync_mirror(seeded, firestore_client, FAST)
    assert (deferred.written, deferred.deferred) == (0, 1)

    _execute(
        seeded,
        "UPDATE firestore_mirror_state SET next_attempt_at = now() - interval '1 second' "
        "WHERE customer_id = :c",
        c=target,
    )
    retried = sync_mirror(seeded, firestore_client, FAST)
    assert (retried.written, retried.failed, retried.unchanged) == (1, 0, N - 1)
    assert _doc(firestore_client, target)["customer_id"] == target
    assert check_mirror_consistency(seeded, firestore_client).ok


def test_transient_failure_is_retried_within_the_run(
    seeded: sa.Engine, firestore_client: firestore.Client
) -> None:
    target = customer_id(8)
    summary = sync_mirror(
        seeded,
        firestore_client,
        NOW_RETRY,
        fail_write=lambda cid, attempt: cid == target and attempt == 1,
    )
    assert (summary.written, summary.failed, summary.retried) == (N, 0, 1)
    row = next(r for r in _logs(seeded, summary.run_id) if r.customer_id == target)
    assert (row.firestore_status, row.retry_count, row.data_snapshot) == ("success", 1, None)


def test_consistency_check_detects_tampering_and_repair_fixes_it(
    seeded: sa.Engine, firestore_client: firestore.Client
) -> None:
    sync_mirror(seeded, firestore_client, FAST)
    assert check_mirror_consistency(seeded, firestore_client).ok
    customers = firestore_client.collection(CUSTOMERS)
    field_changed, hash_changed, sub_deleted, removed = (customer_id(i) for i in (11, 12, 13, 14))
    customers.document(field_changed).update({"metrics.lifetime_value": "0.01"})
    customers.document(hash_changed).update({"content_hash": "0" * 64})
    next(iter(customers.document(sub_deleted).collection(ORDERS).list_documents())).delete()
    customers.document(removed).delete()
    customers.document("not-a-customer").set({"name": "stray"})

    report = check_mirror_consistency(seeded, firestore_client)
    assert not report.ok
    assert report.mismatched == sorted([field_changed, hash_changed, sub_deleted])
    assert report.missing == [removed]
    assert report.extra == ["not-a-customer"]
    assert (report.postgres_count, report.firestore_count) == (N, N)

    sampled = check_mirror_consistency(seeded, firestore_client, sample=N)
    assert sampled.sampled and set(sampled.drifted_ids) == {
        field_changed,
        hash_changed,
        sub_deleted,
        removed,
    }

    repaired = repair_mirror(seeded, firestore_client, report.drifted_ids, FAST)
    assert (repaired.written, repaired.deleted, repaired.failed) == (4, 1, 0)
    after = check_mirror_consistency(seeded, firestore_client)
    assert after.ok, after
    assert {r.operation for r in _logs(seeded, repaired.run_id)} == {"repair"}


def test_dashboard_documents(seeded: sa.Engine, firestore_client: firestore.Client) -> None:
    firestore_client.document("segments/retired").set({"name": "retired"})
    summary = sync_dashboard(seeded, firestore_client)
    assert (summary.segments, summary.deleted) == (3, 1)
    stats = firestore_client.document("stats/current").get().to_dict()
    assert stats["total_customers"] == N
    assert stats["vip_customers"] == 3  # i = 10, 20, 30
    assert MONEY.match(stats["average_ltv"])
    assert isinstance(stats["churn_rate"], float)
    assert isinstance(stats["updated_at"], datetime)
    fans = firestore_client.document(f"segments/{segment_document_id('newsletter/fans')}")
    data = fans.get().to_dict()
    assert data["name"] == "newsletter/fans" and data["customer_count"] == N // 3
    assert not firestore_client.document("segments/retired").get().exists


def test_a_crashed_first_sync_resumes_without_rewriting_committed_batches(
    seeded: sa.Engine, firestore_client: firestore.Client
) -> None:
    with seeded.connect() as conn:
        ids = list(conn.execute(sa.text("SELECT id::text FROM customers ORDER BY id")).scalars())
    crash_on = ids[25]  # in the third batch of 10

    def crash(cid: str, attempt: int) -> bool:
        if cid == crash_on:
            raise RuntimeError("simulated crash")
        return False

    with pytest.raises(RuntimeError, match="simulated crash"):
        sync_mirror(seeded, firestore_client, FAST, fail_write=crash)
    with seeded.connect() as conn:
        committed = conn.execute(
            sa.text("SELECT count(*) FROM firestore_mirror_state")
        ).scalar_one()
    assert 20 <= committed < N
    resumed = sync_mirror(seeded, firestore_client, FAST)
    assert (resumed.unchanged, resumed.written) == (committed, N - committed)
    assert check_mirror_consistency(seeded, firestore_client).ok


@pytest.fixture(scope="module")
def lost_emulator(tmp_path_factory: pytest.TempPathFactory) -> FirestoreEmulator:
    """An emulator that ran on a free port and was stopped: started once for the module (a
    start costs a JVM's boot), since the tests only talk to the dead port and read its log."""
    emulator = FirestoreEmulator(tmp_path_factory.mktemp("lost"))
    with emulator:
        pass
    return emulator


@pytest.fixture
def stopped_emulator(lost_emulator: FirestoreEmulator) -> str:
    """The host of the stopped emulator."""
    return lost_emulator.host


def _client_for(host: str) -> firestore.Client:
    return FirestoreResource(project="crm-lost", emulator_host=host).get_client()


def test_sync_against_a_stopped_emulator_names_it_and_its_log(
    seeded: sa.Engine, stopped_emulator: str, lost_emulator: FirestoreEmulator
) -> None:
    with pytest.raises(FirestoreEmulatorLost) as info:
        sync_mirror(seeded, _client_for(stopped_emulator), FAST)
    message = str(info.value)
    assert stopped_emulator in message
    assert lost_emulator.log_file.name == "firestore-emulator.log"
    assert str(lost_emulator.log_file) in message
    assert "heap_for" in message


def test_writes_that_lose_the_emulator_mid_sync_fail_the_sync(stopped_emulator: str) -> None:
    """The writer's own path: a batch that meets the dead emulator raises, naming it, instead of
    counting every customer as a failed write."""
    root = FirestoreWrite("set", (CUSTOMERS, customer_id(0)), {"n": 1}, is_root=True)
    item = CustomerWrite(customer_id(0), "upsert", [root])
    with FirestoreWriter(_client_for(stopped_emulator), threads=1, timeout=2.0) as writer:
        with pytest.raises(FirestoreEmulatorLost, match=stopped_emulator):
            writer.write([item])


def test_mirror_asset_fails_with_the_emulator_message(
    seeded: sa.Engine, database_url: str, stopped_emulator: str
) -> None:
    result = dg.materialize(
        [firestore_customer_mirror],
        resources={
            "postgres": PostgresResource(dsn=database_url),
            "firestore": FirestoreResource(project="crm-lost", emulator_host=stopped_emulator),
        },
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert f"Lost the Firestore emulator at {stopped_emulator}" in str(
        failure.step_failure_data.error
    )
