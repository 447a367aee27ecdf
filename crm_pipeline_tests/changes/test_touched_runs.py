"""Issue 18 acceptance: a customer changed by each path (pull, webhook, staff action, import) is
recomputed and mirrored by the next incremental run, and nothing else is rewritten."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from google.cloud import firestore

from crm_pipeline.definitions import build_definitions
from crm_pipeline.ingest.files import import_file
from crm_pipeline.sandbox.generate import generate_store, mutate_store
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline.webhooks import process_pending
from crm_pipeline_tests.webhooks.conftest import make_settings
from crm_pipeline_tests.webhooks.helpers import admin_request, shopify_request
from crm_pipeline_tests.webhooks.test_processing_support import shopify_customer
from webhook_receiver.main import create_app


@pytest.fixture
def sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str, firestore_emulator: str
) -> Iterator[SandboxServer]:
    """A 300-customer shop the test may change, with the environment a run would see."""
    store = tmp_path / "store"
    generate_store(store, customers=300, seed=23)
    with SandboxServer(store, klaviyo_rate_limits=False, shopify_plan="plus") as server:
        monkeypatch.setenv("SHOPIFY_API_URL", server.url)
        monkeypatch.setenv("KLAVIYO_API_URL", server.url)
        yield server


def run_job(name: str) -> dg.ExecuteInProcessResult:
    result = build_definitions().resolve_job_def(name).execute_in_process()
    assert result.success
    return result


def materialized(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    event = result.asset_materializations_for_node(asset)[0]
    return {k: v.value for k, v in event.metadata.items()}


def computed_at(engine: sa.Engine) -> dict[str, datetime]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT customer_id::text, computed_at FROM customer_metrics"))
        return dict(rows.tuples().all())


def update_times(client: firestore.Client) -> dict[str, Any]:
    return {snap.id: snap.update_time for snap in client.collection("customers").stream()}


def changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {k for k, v in after.items() if before.get(k) != v}


def ids_by_source(engine: sa.Engine, source: str, external_ids: list[str]) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT customer_id::text FROM customer_sources "
                "WHERE source = :s AND external_id = ANY(:ids)"
            ),
            {"s": source, "ids": external_ids},
        )
        return set(rows.scalars())


def pulled_customers(engine: sa.Engine, mutation: Any) -> set[str]:
    """The customers the mutated Shopify customers, orders and Klaviyo profiles belong to."""
    ids = ids_by_source(engine, "shopify", [str(i) for i in mutation.customers])
    ids |= ids_by_source(engine, "klaviyo", list(mutation.profiles))
    with engine.connect() as conn:
        ids |= set(
            conn.execute(
                sa.text(
                    "SELECT customer_id::text FROM orders WHERE external_id = ANY(:ids) "
                    "AND customer_id IS NOT NULL"
                ),
                {"ids": [str(i) for i in mutation.orders]},
            ).scalars()
        )
    return ids


def bystander(engine: sa.Engine, avoid: set[str]) -> tuple[str, str, str]:
    """A live customer with a Shopify source outside `avoid`: (id, shopify id, email)."""
    with engine.connect() as conn:
        for cid, ext, email in conn.execute(
            sa.text(
                "SELECT c.id::text, s.external_id, c.email_lowercase FROM customers c "
                "JOIN customer_sources s ON s.customer_id = c.id AND s.source = 'shopify' "
                "WHERE c.deleted_at IS NULL AND c.merged_into IS NULL "
                "AND c.email_lowercase IS NOT NULL ORDER BY c.id"
            )
        ):
            if cid not in avoid:
                avoid.add(cid)
                return cid, ext, email
    raise AssertionError("no customer left to change")


def test_each_path_is_refreshed_by_the_next_incremental_run_and_nothing_else(
    clean_db: sa.Engine,
    database_url: str,
    sandbox: SandboxServer,
    firestore_client: firestore.Client,
    tmp_path: Path,
) -> None:
    engine = clean_db
    full = materialized(run_job("full_refresh"), "customer_metrics")
    assert full["scoring_fit"] == "fitted"  # and stored: the incremental runs reuse it
    metrics_before, docs_before = computed_at(engine), update_times(firestore_client)
    assert len(docs_before) > 250

    # pull: 1% of the shop changes in Shopify and Klaviyo
    mutation = mutate_store(
        sandbox.store_path, 0.01, seed=5, now=datetime.now(UTC) - timedelta(minutes=1)
    )
    sandbox.reload()
    pulled = pulled_customers(engine, mutation)
    assert pulled
    taken = set(pulled)
    hooked, hooked_shopify_id, hooked_email = bystander(engine, taken)
    staffed, _, _ = bystander(engine, taken)
    imported, _, imported_email = bystander(engine, taken)

    with TestClient(create_app(make_settings(database_url))) as receiver:
        # webhook: Shopify says the customer renamed themselves
        body, headers = shopify_request(
            shopify_customer(
                int(hooked_shopify_id),
                datetime.now(UTC),
                email=hooked_email,
                first_name="Renamed",
            ),
            topic="customers/update",
        )
        assert receiver.post("/webhooks/shopify", content=body, headers=headers).status_code == 200
        # staff action: a signed admin delivery from the admin app
        body, headers = admin_request(
            {
                "action": "customer.note",
                "customer_id": staffed,
                "internal_notes": "Called about the late parcel",
                "occurred_at": datetime.now(UTC).isoformat(),
                "actor": "jane@shop.example",
            }
        )
        assert receiver.post("/webhooks/admin", content=body, headers=headers).status_code == 200
    report = process_pending(engine)
    assert report.outcomes["applied"] == 2, report
    # import: a file row links to an existing customer and tags them
    people = tmp_path / "people.jsonl"
    people.write_text(json.dumps({"email": imported_email, "tags": ["trade-show"]}) + "\n")
    assert import_file(engine, people).report.linked == 1

    result = run_job("incremental_sync")
    touched = pulled | {hooked, staffed, imported}
    assert materialized(result, "customer_metrics")["scoring_fit"] == "reused"
    assert changed(metrics_before, computed_at(engine)) == touched
    mirror = materialized(result, "firestore_customer_mirror")
    assert mirror["mode"] == "incremental"
    assert mirror["written"] == len(touched) and mirror["deleted"] == 0
    # only the touched documents were built and hashed: no scan of every live customer
    assert mirror["considered"] == len(touched)
    assert changed(docs_before, update_times(firestore_client)) == touched

    # process_webhooks refreshes what its deliveries touched, and only that
    metrics_before, docs_before = computed_at(engine), update_times(firestore_client)
    late, _, _ = bystander(engine, taken)
    with TestClient(create_app(make_settings(database_url))) as receiver:
        body, headers = admin_request(
            {
                "action": "customer.tags",
                "customer_id": late,
                "add": ["key-account"],
                "occurred_at": datetime.now(UTC).isoformat(),
                "actor": "jane@shop.example",
            }
        )
        assert receiver.post("/webhooks/admin", content=body, headers=headers).status_code == 200
    result = run_job("process_webhooks")
    metrics = materialized(result, "customer_metrics")
    assert metrics["customers_computed"] == 1
    assert (metrics["scoring_fit"], metrics["scoring_fit_id"]) == ("reused", full["scoring_fit_id"])
    assert materialized(result, "firestore_customer_mirror")["written"] == 1
    assert changed(metrics_before, computed_at(engine)) == {late}
    assert changed(docs_before, update_times(firestore_client)) == {late}
