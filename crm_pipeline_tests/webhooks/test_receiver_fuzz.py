"""Malformed input never yields a 5xx: schemathesis over the OpenAPI schema, and hypothesis
posting correctly signed random bodies and headers so the parser and the database are reached."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import schemathesis
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from crm_pipeline.webhooks.admin_schema import ADMIN_ACTIONS, InvalidAdminAction, parse_admin_action
from crm_pipeline_tests.webhooks.conftest import make_settings
from crm_pipeline_tests.webhooks.helpers import (
    KLAVIYO_SECRET,
    SHOPIFY_SECRET,
    admin_signature_headers,
)
from webhook_receiver.main import create_app
from webhook_receiver.signatures import sign_base64, sign_klaviyo


@pytest.fixture
def receiver_app(database_url: str) -> FastAPI:
    return create_app(make_settings(database_url))


def test_no_server_error_on_generated_requests(receiver_app: FastAPI) -> None:
    """Schemathesis cases (valid and negative) for every operation of the OpenAPI schema.

    Driven through its Python API with plain hypothesis: its pytest plugin does not load under
    this pytest version.
    """
    api = schemathesis.openapi.from_asgi("/openapi.json", receiver_app)
    strategies = []
    for result in api.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies.append(operation.as_strategy(generation_mode=mode))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def check(case: schemathesis.Case) -> None:
        response = case.call()
        assert response.status_code < 500, (case.method, case.path, response.status_code)

    check()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300)
raw_bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.sampled_from([b'{"a":"\\u0000"}', b'{"a":"\\ud800"}', b"[1e999]", b"\xef\xbb\xbf{}"]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    route=st.sampled_from(["shopify", "klaviyo", "admin"]),
    body=raw_bodies,
    delivery_id=header_text,
    topic=header_text,
    shop=header_text,
    triggered=header_text,
)
def test_signed_random_deliveries_never_5xx(
    fuzz_client: TestClient,
    route: str,
    body: bytes,
    delivery_id: str,
    topic: str,
    shop: str,
    triggered: str,
) -> None:
    if route == "shopify":
        headers = {
            "X-Shopify-Hmac-Sha256": sign_base64(body, SHOPIFY_SECRET.encode()),
            "X-Shopify-Webhook-Id": delivery_id,
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": shop,
            "X-Shopify-Triggered-At": triggered,
        }
    elif route == "klaviyo":
        stamp = str(int(time.time()))
        headers = {
            "Klaviyo-Signature": sign_klaviyo(body, stamp, KLAVIYO_SECRET.encode()),
            "Klaviyo-Timestamp": stamp,
            "Klaviyo-Webhook-Id": delivery_id,
        }
    else:
        headers = admin_signature_headers(body)
    answer = fuzz_client.post(f"/webhooks/{route}", content=body, headers=headers)
    allowed = (200, 400, 413, 422) if route == "admin" else (200, 400, 413)
    assert answer.status_code in allowed, (answer.status_code, answer.text)


@pytest.fixture(scope="module")
def fuzz_client(database_url: str, engine: sa.Engine):
    with TestClient(create_app(make_settings(database_url))) as client:
        yield client


ADMIN_FIELDS = (
    "customer_id",
    "admin_id",
    "email",
    "internal_notes",
    "add",
    "remove",
    "segment_name",
    "segment_type",
    "activity_type",
    "customer",
    "reason",
    "occurred_at",
    "unknown_field",
)
# JSON that the receiver's parser accepts (finite floats, 64-bit integers)
admin_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
admin_actions = st.fixed_dictionaries(
    {"action": st.sampled_from([*ADMIN_ACTIONS, "customer.purge", ""])},
    optional={
        name: st.one_of(
            admin_values,
            st.sampled_from(["c-1", "custom", "other", "2026-01-01T00:00:00Z", ["vip"]]),
        )
        for name in ADMIN_FIELDS
    },
)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(action=admin_actions)
def test_admin_action_is_stored_exactly_when_its_model_accepts_it(
    fuzz_client: TestClient, engine: sa.Engine, action: dict
) -> None:
    action_id = str(uuid.uuid4())
    body = json.dumps({**action, "action_id": action_id}).encode()
    answer = fuzz_client.post(
        "/webhooks/admin", content=body, headers=admin_signature_headers(body)
    )
    try:
        parse_admin_action(json.loads(body))
        valid = True
    except InvalidAdminAction:
        valid = False
    assert answer.status_code == (200 if valid else 422), answer.text
    with engine.connect() as conn:
        topics = (
            conn.execute(
                sa.text("SELECT topic FROM webhook_events WHERE delivery_id = :id"),
                {"id": action_id},
            )
            .scalars()
            .all()
        )
    assert topics == ([action["action"]] if valid else [])
