"""The receiver and the processor derive the same subject_key for the same delivery.

Each payload goes in twice: through the receiver (which fills subject_key when landing) and
landed with subject_key NULL (which the processor fills while processing). Both rows must end
with the same, expected key: GDPR erasure and per-customer ordering look rows up by it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crm_pipeline_tests.webhooks.helpers import admin_request, klaviyo_request, shopify_request
from crm_pipeline_tests.webhooks.test_processing_support import land, run

CASES: list[tuple[str, str, dict[str, Any], str | None]] = [
    ("shopify", "customers/update", {"id": 7, "email": "a@example.com"}, "shopify:7"),
    ("shopify", "customers/update", {"id": "gid://shopify/Customer/7"}, "shopify:7"),
    ("shopify", "customer.tags_added", {"customerId": "gid://shopify/Customer/8"}, "shopify:8"),
    (
        "shopify",
        "customers/merge",
        {"admin_graphql_api_customer_kept_id": "gid://shopify/Customer/10"},
        "shopify:10",
    ),
    ("shopify", "orders/create", {"id": 1, "customer": {"id": 11}}, "shopify:11"),
    ("shopify", "orders/create", {"id": 2}, None),
    (
        "klaviyo",
        "event",
        {"type": "event", "id": "e1", "relationships": {"profile": {"data": {"id": "P1"}}}},
        "klaviyo:P1",
    ),
    ("klaviyo", "profile", {"type": "profile", "id": "P2"}, "klaviyo:P2"),
    ("klaviyo", "event", {"type": "event", "attributes": {"profile_id": "P3"}}, "klaviyo:P3"),
    ("manual", "customer.block", {"customer_id": "c-1"}, "crm:c-1"),
    ("manual", "customer.block", {"admin_id": "adm-1"}, "manual:adm-1"),
    (
        "manual",
        "customer.unblock",
        {"shopify_customer_id": "gid://shopify/Customer/9"},
        "shopify:9",
    ),
    (
        "manual",
        "customer.create",
        {"customer": {"admin_id": "adm-2", "first_name": "Ann"}},
        "manual:adm-2",
    ),
    ("manual", "customer.delete", {"email": "someone@example.com"}, None),
]


def _receive(client: TestClient, source: str, topic: str, payload: dict[str, Any]) -> None:
    if source == "shopify":
        body, headers = shopify_request(payload, topic=topic, webhook_id="received")
        route = "shopify"
    elif source == "klaviyo":
        body, headers = klaviyo_request({"data": [payload]}, webhook_id="received")
        route = "klaviyo"
    else:
        body, headers = admin_request({"action": topic, **payload}, action_id="received")
        route = "admin"
    answer = client.post(f"/webhooks/{route}", content=body, headers=headers)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(("source", "topic", "payload", "expected"), CASES)
def test_receiver_and_processor_agree(
    client: TestClient,
    clean_db: sa.Engine,
    source: str,
    topic: str,
    payload: dict[str, Any],
    expected: str | None,
) -> None:
    _receive(client, source, topic, payload)
    document = (
        {"action": topic, "action_id": "derived", **payload} if source == "manual" else payload
    )
    land(clean_db, source, topic, document, delivery_id="derived")
    run(clean_db)  # the processor fills the NULL subject_key of the second row
    with clean_db.connect() as conn:
        keys = dict(
            conn.execute(
                sa.text(
                    "SELECT CASE WHEN delivery_id = 'derived' THEN 'processor' "
                    "ELSE 'receiver' END, subject_key FROM webhook_events"
                )
            ).all()
        )
    assert keys == {"receiver": expected, "processor": expected}, json.dumps(payload)


@pytest.mark.parametrize(("source", "topic", "payload", "expected"), CASES)
def test_subject_key_function(
    source: str, topic: str, payload: dict[str, Any], expected: str | None
) -> None:
    from crm_pipeline.webhooks.subjects import subject_key

    assert subject_key(source, topic, payload) == expected


@pytest.mark.parametrize("payload", [None, [], "x", 1, {"id": {"nested": 1}}, {"id": True}])
def test_payloads_naming_nobody(payload: Any) -> None:
    from crm_pipeline.webhooks.subjects import subject_key

    for source in ("shopify", "klaviyo", "manual"):
        assert subject_key(source, "customers/update", payload) is None
