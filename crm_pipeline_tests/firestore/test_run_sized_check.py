"""The mirror check sized to the run: incremental and webhook runs read what they wrote plus a
small sample; full_refresh (and its nightly schedule) still compares everything, streaming.

Reads are counted by spying on the Firestore client's read calls, independently of the
`documents_read` the check reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from google.cloud import firestore
from google.cloud.firestore_v1.collection import CollectionReference
from google.cloud.firestore_v1.query import Query

import crm_pipeline.changes.refresh as refresh
import crm_pipeline.firestore.verify as verify
from crm_pipeline.changes.log import METRICS, SEGMENTS, ChangeWindow, advance, safe_horizon
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.firestore_mirror.assets import firestore_customer_mirror
from crm_pipeline.defs.firestore_mirror.checks import (
    MODE_TAG,
    check_mode,
    firestore_customer_mirror_consistent,
)
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource
from crm_pipeline.firestore.documents import (
    ACTIVITIES,
    CUSTOMERS,
    ORDERS,
    SUBCOLLECTIONS,
)
from crm_pipeline.firestore.mirror import MirrorSettings, sync_mirror
from crm_pipeline.firestore.verify import (
    check_mirror_consistency,
    ids_written_by_run,
    verify_customers,
)
from crm_pipeline_tests.firestore.seed import customer_id, seed_customers
from crm_pipeline_tests.fixtures.firestore import TEST_PROJECT

N = 40
FAST = MirrorSettings(batch_size=10, threads=2, backoff_seconds=0.01)
UPSTREAM = [dg.AssetSpec(key) for key in ("customer_metrics", "customer_segments")]


class ReadSpy:
    """Records the customer ids whose document or subdocuments were read, and how many
    documents the reads returned (by key through get_all, or by query through stream)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.customers: set[str] = set()
        self.documents = 0
        self.group_queries: list[Any] = []
        self.key_reads = 0
        self.queried: list[str] = []
        spy = self
        get_all, collection_stream = firestore.Client.get_all, CollectionReference.stream
        query_stream = Query.stream

        def spied_get_all(client: Any, refs: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            refs = list(refs)
            spy.customers.update(ref.path.split("/")[1] for ref in refs)
            spy.key_reads += len(refs)
            for snap in get_all(client, refs, *args, **kwargs):
                spy.documents += snap.exists
                yield snap

        def spied_collection_stream(ref: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            spy.queried.append(ref.id)
            if ref.parent is not None:
                spy.customers.add(ref.parent.id)
            for snap in collection_stream(ref, *args, **kwargs):
                spy.documents += 1
                yield snap

        def spied_query_stream(query: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            if query._all_descendants:
                spy.group_queries.append(query)
            for snap in query_stream(query, *args, **kwargs):
                if query._all_descendants:
                    spy.documents += 1
                    spy.customers.add(snap.reference.parent.parent.id)
                yield snap

        monkeypatch.setattr(firestore.Client, "get_all", spied_get_all)
        monkeypatch.setattr(CollectionReference, "stream", spied_collection_stream)
        monkeypatch.setattr(Query, "stream", spied_query_stream)


def _execute(engine: sa.Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def _recorded(engine: sa.Engine, cid: str, collection: str) -> list[str]:
    """The subdocument ids of one collection the mirror recorded for a customer."""
    with engine.connect() as conn:
        return sorted(
            conn.execute(
                sa.text(
                    "SELECT doc_id FROM firestore_mirror_subdocuments "
                    "WHERE customer_id = :c AND collection = :n"
                ),
                {"c": cid, "n": collection},
            ).scalars()
        )


def _record(engine: sa.Engine, cid: str, collection: str, doc_id: str) -> None:
    """A state row with no hash: the mirror wrote (or tried to) and may not have deleted it."""
    _execute(
        engine,
        "INSERT INTO firestore_mirror_subdocuments (customer_id, collection, doc_id) "
        "VALUES (:c, :n, :d) ON CONFLICT DO NOTHING",
        c=cid,
        n=collection,
        d=doc_id,
    )


def _rename(engine: sa.Engine, *numbers: int) -> list[str]:
    ids = [customer_id(i) for i in numbers]
    _execute(
        engine,
        "UPDATE customers SET first_name = 'Renamed' WHERE id = ANY(CAST(:ids AS uuid[]))",
        ids=ids,
    )
    return sorted(ids)


@pytest.fixture
def mirrored(clean_db: sa.Engine, firestore_client: firestore.Client) -> sa.Engine:
    seed_customers(clean_db, N)
    sync_mirror(clean_db, firestore_client, FAST)
    return clean_db


def test_the_job_decides_the_mode_and_a_tag_overrides_it() -> None:
    assert check_mode("incremental_sync", {}) == "run"
    assert check_mode("process_webhooks", {}) == "run"
    assert check_mode("full_refresh", {}) == "full"  # also nightly_full_reconcile's job
    assert check_mode("__ephemeral_asset_job__", {}) == "full"
    assert check_mode("incremental_sync", {MODE_TAG: "full"}) == "full"
    assert check_mode("full_refresh", {MODE_TAG: "run"}) == "run"
    assert check_mode("incremental_sync", {MODE_TAG: "bogus"}) == "run"


def test_a_store_past_the_full_check_limit_is_checked_by_sample_unless_a_tag_asks() -> None:
    assert check_mode("full_refresh", {}, live_customers=50_000, full_check_max=50_000) == "full"
    assert check_mode("full_refresh", {}, live_customers=50_001, full_check_max=50_000) == "sample"
    assert check_mode("full_refresh", {}, live_customers=10**7, full_check_max=None) == "full"
    big = {"live_customers": 10**6, "full_check_max": 50_000}
    assert check_mode("full_refresh", {MODE_TAG: "full"}, **big) == "full"
    assert check_mode("incremental_sync", {}, **big) == "run"  # run-sized stays run-sized
    assert check_mode("full_refresh", {MODE_TAG: "sample"}) == "sample"


def test_a_run_sized_check_reads_only_the_written_ids_and_the_sample(
    mirrored: sa.Engine, firestore_client: firestore.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    changed = _rename(mirrored, 3, 17, 29)
    run = sync_mirror(mirrored, firestore_client, FAST, run_id="run-sized")
    assert run.written == 3
    written = ids_written_by_run(mirrored, "run-sized")
    assert written == changed

    spy = ReadSpy(monkeypatch)
    report = verify_customers(mirrored, firestore_client, written, sample=5)
    assert report.ok, report
    assert report.mode == "run" and report.postgres_count is None
    assert set(written) <= spy.customers
    assert len(spy.customers) <= len(written) + 5 and report.checked == len(spy.customers)
    assert spy.group_queries == []  # never a collection-group read
    assert spy.queried == []  # nor any other query: only reads by key
    assert spy.documents == report.documents_read
    # far fewer documents than the store holds (N customers with their subdocuments)
    full_spy_total = check_mirror_consistency(mirrored, firestore_client).documents_read
    assert report.documents_read < full_spy_total / 3


def test_a_run_sized_check_catches_missing_extra_and_stale_written_documents(
    mirrored: sa.Engine, firestore_client: firestore.Client
) -> None:
    stale, missing, extra, fine = (customer_id(i) for i in (5, 6, 7, 8))
    _rename(mirrored, 5, 6, 8)
    _execute(mirrored, "UPDATE customers SET deleted_at = now() WHERE id = :c", c=extra)
    [left] = _recorded(mirrored, extra, ORDERS)[:1]
    run = sync_mirror(mirrored, firestore_client, FAST, run_id="run-drift")
    assert (run.written, run.deleted) == (3, 1)
    customers = firestore_client.collection(CUSTOMERS)
    customers.document(stale).update({"first_name": "Tampered"})
    firestore_client.recursive_delete(customers.document(missing))
    # the deleted customer's order survived, as after a failed delete (its state row kept)
    customers.document(extra).collection(ORDERS).document(left).set({"total": "1.00"})
    _record(mirrored, extra, ORDERS, left)

    report = verify_customers(
        mirrored, firestore_client, ids_written_by_run(mirrored, "run-drift"), sample=0
    )
    assert report.checked == 4 and not report.ok
    assert (report.mismatched, report.missing, report.extra) == ([stale], [missing], [extra])
    assert fine not in report.drifted_ids


def test_a_run_sized_check_reads_subdocuments_by_key_and_catches_their_drift(
    mirrored: sa.Engine, firestore_client: firestore.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost, edited, undeleted, stranger, fine = (customer_id(i) for i in (2, 3, 4, 5, 6))
    customers = firestore_client.collection(CUSTOMERS)
    customers.document(lost).collection(ORDERS).document(
        _recorded(mirrored, lost, ORDERS)[0]
    ).delete()
    first_activity = _recorded(mirrored, edited, ACTIVITIES)[0]
    customers.document(edited).collection(ACTIVITIES).document(first_activity).update(
        {"activity_type": "tampered"}
    )
    # written by the mirror, then its delete failed: the state row is still there
    customers.document(undeleted).collection(ORDERS).document("o-left").set({"total": "1.00"})
    _record(mirrored, undeleted, ORDERS, "o-left")
    # written by someone else: no state row
    customers.document(stranger).collection(ORDERS).document("o-stranger").set({"total": "2"})

    spy = ReadSpy(monkeypatch)
    checked = [lost, edited, undeleted, stranger, fine]
    report = verify_customers(mirrored, firestore_client, checked, sample=0)
    assert report.checked == 5 and not report.ok
    assert report.mismatched == sorted([lost, edited, undeleted])
    assert report.missing == report.extra == []
    assert spy.group_queries == [] and spy.queried == []  # by key only
    assert spy.customers == set(checked)
    # what run mode cannot see, the full check finds
    full = check_mirror_consistency(mirrored, firestore_client)
    assert full.mismatched == sorted([lost, edited, undeleted, stranger])


def test_only_the_full_mode_sees_an_extra_document_nobody_wrote(
    mirrored: sa.Engine, firestore_client: firestore.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = firestore_client.collection(CUSTOMERS)
    stray = "ffffffff-0000-4000-8000-000000000000"  # a uuid no customer has
    customers.document(stray).set({"name": "stray"})
    orphan = "80000000-0000-4000-8000-000000000000"  # no document, an order left behind
    customers.document(orphan).collection(ORDERS).document("o-orphan").set({"total": "1"})
    neighbour = sorted(customer_id(i) for i in range(1, N + 1))[12]
    customers.document(neighbour).collection(ORDERS).document("o-stale").set({"total": "9.99"})
    monkeypatch.setattr(verify, "_GET_CHUNK", 7)  # several id chunks, one boundary at 12..13
    monkeypatch.setattr(verify, "_GROUP_PAGE", 25)  # several pages of each collection group

    # run mode reads by key: neither the stray nor a subdocument nobody recorded (documented)
    run_sized = verify_customers(mirrored, firestore_client, [], sample=N)
    assert run_sized.checked == N and run_sized.ok

    spy = ReadSpy(monkeypatch)
    full = check_mirror_consistency(mirrored, firestore_client)
    assert not full.ok and sorted(full.extra) == sorted([orphan, stray])
    assert full.mismatched == [neighbour]
    assert full.checked == N and full.documents_read == spy.documents
    # subdocuments come from name-ordered collection-group pages, each bounded by the page size
    assert all(q._orders and q._limit == 25 for q in spy.group_queries)
    assert len(spy.group_queries) > len(SUBCOLLECTIONS)  # paged, so memory holds one page
    assert spy.queried == []  # no per-customer query


@pytest.fixture
def resources(database_url: str, firestore_emulator: str) -> dict[str, Any]:
    return {
        "postgres": PostgresResource(dsn=database_url),
        "firestore": FirestoreResource(
            project=TEST_PROJECT,
            emulator_host=firestore_emulator,
            batch_size=10,
            write_threads=2,
            verify_sample=4,
        ),
    }


def _job(name: str, resources: dict[str, Any]) -> dg.JobDefinition:
    defs = dg.Definitions(
        resources=resources,
        assets=[firestore_customer_mirror, *UPSTREAM],
        asset_checks=[firestore_customer_mirror_consistent],
        jobs=[dg.define_asset_job(name, selection=[firestore_customer_mirror])],
    )
    return defs.resolve_job_def(name)


def test_an_incremental_run_checks_its_writes_and_fails_on_a_stale_one(
    mirrored: sa.Engine,
    firestore_client: firestore.Client,
    resources: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    changed = _rename(mirrored, 9, 21)
    broken = changed[0]
    # the mirror's window ends where the segments stage got: as if metrics and segments ran
    with mirrored.begin() as conn:
        horizon = safe_horizon(conn)
        for consumer in (METRICS, SEGMENTS):
            advance(conn, ChangeWindow(consumer, 0, horizon, []))
    real_sync = refresh.sync_mirror

    def failing_sync(*args: Any, **kwargs: Any) -> Any:
        # the write of one changed customer fails for good: Firestore keeps its old document
        return real_sync(*args, fail_write=lambda cid, attempt: cid == broken, **kwargs)

    monkeypatch.setattr(refresh, "sync_mirror", failing_sync)
    result = _job("incremental_sync", resources).execute_in_process()
    assert result.success
    [check] = result.get_asset_check_evaluations()
    meta = {k: v.value for k, v in check.metadata.items()}
    assert not check.passed and meta["mode"] == "run"
    assert meta["mismatched"] == 1 and broken in meta["drifted_ids_preview"]
    assert 2 <= meta["checked"] <= 2 + 4 and "postgres_count" not in meta


def test_a_full_refresh_run_compares_everything(
    mirrored: sa.Engine, firestore_client: firestore.Client, resources: dict[str, Any]
) -> None:
    firestore_client.collection(CUSTOMERS).document("zz-stray").set({"name": "stray"})
    result = _job("full_refresh", resources).execute_in_process()
    [check] = result.get_asset_check_evaluations()
    meta = {k: v.value for k, v in check.metadata.items()}
    assert not check.passed and meta["mode"] == "full" and meta["checked"] == N
    assert meta["extra"] == 1 and meta["postgres_count"] == N
