"""Issue 16 item 5: three customer-hash buckets recompute exactly what one unbucketed full
recompute does: the same customer_metrics rows, segment assignments and Firestore documents."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.changes.buckets import Bucket, all_buckets, bucket_customers
from crm_pipeline.changes.refresh import refresh_metrics, refresh_segment_assignments
from crm_pipeline.defs.pipeline.bucketed import AS_OF_TAG, bucketed_job
from crm_pipeline.defs.resources import resources
from crm_pipeline.firestore.mirror import sync_mirror
from crm_pipeline.sandbox.generate import generate_store
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline_tests.changes.test_touched_runs import run_job

AS_OF = datetime(2026, 11, 30, 12, tzinfo=UTC)
VOLATILE = {"mirrored_at"}  # when the document was written, not what it says


@pytest.fixture
def sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str, firestore_emulator: str
) -> Iterator[SandboxServer]:
    store = tmp_path / "store"
    generate_store(store, customers=200, seed=16)
    with SandboxServer(store, klaviyo_rate_limits=False, shopify_plan="plus") as server:
        monkeypatch.setenv("SHOPIFY_API_URL", server.url)
        monkeypatch.setenv("KLAVIYO_API_URL", server.url)
        yield server


def metrics_rows(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM customer_metrics")).mappings().all()
    return {str(r["customer_id"]): {k: v for k, v in r.items() if k != "computed_at"} for r in rows}


def segment_rows(engine: sa.Engine) -> set[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT customer_id::text, segment_name, assigned_by, confidence, expires_at "
                "FROM customer_segments"
            )
        )
        return set(rows.tuples().all())


def documents(client: firestore.Client) -> dict[str, dict[str, Any]]:
    """Every customer document with its subcollections' documents."""
    out: dict[str, dict[str, Any]] = {}
    for snap in client.collection("customers").stream():
        data = {k: v for k, v in (snap.to_dict() or {}).items() if k not in VOLATILE}
        for sub in snap.reference.collections():
            data[f"/{sub.id}"] = {s.id: s.to_dict() for s in sub.stream()}
        out[snap.id] = data
    return out


def forget_results(engine: sa.Engine, client: firestore.Client) -> None:
    """Drop computed metrics, segments and the mirror (documents, state) to recompute them."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM customer_metrics"))
        # computed segments go too: each run assigns them afresh (and with its own expiry)
        conn.execute(sa.text("DELETE FROM customer_segments WHERE assigned_by <> 'manual'"))
        conn.execute(sa.text("DELETE FROM firestore_mirror_subdocuments"))
        conn.execute(sa.text("DELETE FROM firestore_mirror_state"))
    client.recursive_delete(client.collection("customers"))


def test_bucketed_recompute_equals_the_unbucketed_one(
    clean_db: sa.Engine, sandbox: SandboxServer, firestore_client: firestore.Client
) -> None:
    run_job("full_refresh")
    with clean_db.connect() as conn:  # the buckets split the customers, each into one bucket
        everyone = list(conn.execute(sa.text("SELECT id::text FROM customers")).scalars())
        pieces = [bucket_customers(conn, b) for b in all_buckets(3)]
    assert sorted(i for piece in pieces for i in piece) == sorted(everyone)
    assert all(pieces), "200 customers leave no bucket of 3 empty"
    with pytest.raises(ValueError):
        Bucket(3, 3)
    with clean_db.begin() as conn:  # a few dead customers: their documents go, in both runs
        conn.execute(
            sa.text(
                "UPDATE customers SET deleted_at = now() WHERE id IN "
                "(SELECT id FROM customers ORDER BY id LIMIT 5)"
            )
        )
    forget_results(clean_db, firestore_client)
    refresh_metrics(clean_db, AS_OF, full=True)
    refresh_segment_assignments(clean_db, AS_OF, full=True)
    sync_mirror(clean_db, firestore_client)
    expected = (metrics_rows(clean_db), segment_rows(clean_db), documents(firestore_client))
    assert expected[0] and expected[2]

    forget_results(clean_db, firestore_client)
    result = bucketed_job(3).execute_in_process(
        resources=resources(), tags={AS_OF_TAG: AS_OF.isoformat()}
    )
    assert result.success
    assert {e.step_key for e in result.get_step_success_events()} >= {
        f"{stage}_bucket_{i}" for stage in ("metrics", "segments", "mirror") for i in range(3)
    }
    actual = (metrics_rows(clean_db), segment_rows(clean_db), documents(firestore_client))
    assert actual[0] == expected[0]
    assert actual[1] == expected[1]
    assert actual[2] == expected[2]
