"""`crm-pipeline worker`: signed admin actions reach Firestore and Dagster without a run."""

from __future__ import annotations

import uuid

import dagster as dg
import sqlalchemy as sa
from fastapi.testclient import TestClient
from google.cloud import firestore

from crm_pipeline_tests.webhooks.helpers import admin_request
from crm_pipeline_tests.webhooks.test_processing_support import (
    at,
    customer_by_shopify_id,
    land,
    run,
    shopify_customer,
)
from crm_pipeline_tests.worker.support import document, running_worker, wait_for


def _post(client: TestClient, payload: dict[str, object]) -> str:
    action_id = str(uuid.uuid4())
    body, headers = admin_request(payload, action_id=action_id)
    answer = client.post("/webhooks/admin", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return action_id


def test_worker_applies_a_signed_admin_action_and_mirrors_its_state(
    client: TestClient,
    clean_db: sa.Engine,
    database_url: str,
    firestore_client: firestore.Client,
) -> None:
    land(clean_db, "shopify", "customers/create", shopify_customer(7, at(0)), triggered_at=at(0))
    run(clean_db)
    cid = str(customer_by_shopify_id(clean_db, 7).id)
    with dg.DagsterInstance.ephemeral() as instance:
        with running_worker(clean_db, database_url, firestore_client, instance):
            note = _post(
                client,
                {
                    "action": "customer.note",
                    "customer_id": cid,
                    "internal_notes": "Call before delivery",
                    "occurred_at": at(5).isoformat(),
                },
            )
            tags = _post(
                client,
                {
                    "action": "customer.tags",
                    "customer_id": cid,
                    "add": ["key-account"],
                    "occurred_at": at(6).isoformat(),
                },
            )
            unknown = _post(
                client,
                {
                    "action": "customer.note",
                    "customer_id": str(uuid.uuid4()),
                    "internal_notes": "nobody",
                    "occurred_at": at(7).isoformat(),
                },
            )
            states = {
                action: wait_for(
                    lambda action=action: document(firestore_client, f"admin_actions/{action}")
                )
                for action in (note, tags, unknown)
            }
            customer = document(firestore_client, f"customers/{cid}")
        events = {
            key: instance.get_latest_materialization_event(dg.AssetKey(key))
            for key in ("webhook_deliveries", "customer_metrics", "firestore_customer_mirror")
        }
    # "applied" is written after the customer's document: whoever sees it reads the new customer
    assert states[note]["state"] == states[tags]["state"] == "applied"
    assert (states[note]["action"], states[note]["outcome"]) == ("customer.note", "applied")
    assert customer is not None
    assert customer["internal_notes"] == "Call before delivery"
    assert "key-account" in customer["tags"]
    # an action about a customer not known yet is retried: the app sees why, not the error text
    assert states[unknown]["state"] == "failed"
    assert states[unknown]["reason"] == "customer_not_found"
    assert "next_attempt_at" in states[unknown]
    assert all(event is not None for event in events.values()), events
    assert events["webhook_deliveries"].run_id == ""  # runless: reported by the worker
