"""The receiver's answers per docs/reference.md section 4, against the real session database."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crm_pipeline_tests.webhooks.conftest import count_events, make_settings
from crm_pipeline_tests.webhooks.helpers import (
    admin_request,
    klaviyo_request,
    shopify_request,
)
from webhook_receiver.main import create_app
from webhook_receiver.settings import WebhookSettings


def test_shopify_delivery_is_stored(client: TestClient, clean_db: sa.Engine) -> None:
    body, headers = shopify_request({"id": 7, "email": "a@b.c"}, webhook_id="wh-1")
    answer = client.post("/webhooks/shopify", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "accepted"
    with clean_db.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM webhook_events")).mappings().one()
    assert (row["source"], row["delivery_id"], row["topic"]) == (
        "shopify",
        "wh-1",
        "customers/update",
    )
    assert row["shop_domain"] == "test-shop.myshopify.com"
    assert row["triggered_at"].year == 2024
    assert row["payload"] == {"id": 7, "email": "a@b.c"}
    assert row["subject_key"] == "shopify:7"
    assert row["status"] == "pending"
    assert "x-shopify-topic" in row["headers"]


@pytest.mark.parametrize(
    "tamper",
    ["wrong_secret", "missing_header", "one_byte_changed", "garbage_header"],
)
def test_bad_shopify_signature_is_401_and_stores_nothing(
    client: TestClient, clean_db: sa.Engine, tamper: str
) -> None:
    secret = "not-the-right-secret" if tamper == "wrong_secret" else None
    body, headers = shopify_request({"id": 1}, **({"secret": secret} if secret else {}))
    if tamper == "missing_header":
        del headers["X-Shopify-Hmac-Sha256"]
    elif tamper == "one_byte_changed":
        body = body.replace(b"1", b"2", 1)
    elif tamper == "garbage_header":
        headers["X-Shopify-Hmac-Sha256"] = "%%%not base64"
    answer = client.post("/webhooks/shopify", content=body, headers=headers)
    assert answer.status_code == 401
    assert count_events(clean_db) == 0


def test_klaviyo_signature_and_stale_timestamp(client: TestClient, clean_db: sa.Engine) -> None:
    payload = {"data": [{"type": "event", "id": "e1"}]}
    stale_body, stale = klaviyo_request(payload, timestamp=time.time() - 3600)
    assert client.post("/webhooks/klaviyo", content=stale_body, headers=stale).status_code == 401
    future_body, future = klaviyo_request(payload, timestamp=time.time() + 3600)
    assert client.post("/webhooks/klaviyo", content=future_body, headers=future).status_code == 401
    body, headers = klaviyo_request(payload, secret="wrong-secret-xxxxxxxx")
    assert client.post("/webhooks/klaviyo", content=body, headers=headers).status_code == 401
    body, headers = klaviyo_request(payload)
    altered = body.replace(b"e1", b"e2")
    assert client.post("/webhooks/klaviyo", content=altered, headers=headers).status_code == 401
    del headers["Klaviyo-Signature"]
    assert client.post("/webhooks/klaviyo", content=body, headers=headers).status_code == 401
    assert count_events(clean_db) == 0


def test_klaviyo_batch_stores_one_row_per_item(client: TestClient, clean_db: sa.Engine) -> None:
    payload = {
        "data": [
            {
                "type": "event",
                "id": "e1",
                "attributes": {"datetime": "2024-05-01T10:00:00+00:00"},
                "relationships": {"profile": {"data": {"type": "profile", "id": "P1"}}},
            },
            {"topic": "profile.updated", "type": "profile", "id": "P2"},
        ]
    }
    body, headers = klaviyo_request(payload, webhook_id="kv-1")
    answer = client.post("/webhooks/klaviyo", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["stored"] == 2
    with clean_db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT delivery_id, topic, subject_key, payload FROM webhook_events "
                "WHERE source = 'klaviyo' ORDER BY delivery_id"
            )
        ).all()
    assert [r.delivery_id for r in rows] == ["kv-1:0", "kv-1:1"]
    assert [r.topic for r in rows] == ["event", "profile.updated"]
    assert [r.subject_key for r in rows] == ["klaviyo:P1", "klaviyo:P2"]
    assert rows[0].payload["id"] == "e1"
    # The same delivery again (Klaviyo retry): 200, nothing new.
    assert client.post("/webhooks/klaviyo", content=body, headers=headers).status_code == 200
    assert count_events(clean_db) == 2


def test_admin_action_is_stored_as_manual(client: TestClient, clean_db: sa.Engine) -> None:
    body, headers = admin_request(
        {"action": "customer.tags", "customer_id": "c-1", "add": ["vip"]}, action_id="act-1"
    )
    assert client.post("/webhooks/admin", content=body, headers=headers).status_code == 200
    body2, headers2 = admin_request(
        {"admin_id": "adm-9"}, action_id="act-2", action="customer.block"
    )
    assert client.post("/webhooks/admin", content=body2, headers=headers2).status_code == 200
    with clean_db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT source, topic, subject_key FROM webhook_events ORDER BY delivery_id")
        ).all()
    assert [tuple(r) for r in rows] == [
        ("manual", "customer.tags", "crm:c-1"),
        ("manual", "customer.block", "manual:adm-9"),
    ]
    body3, headers3 = admin_request({"customer_id": "c-1"})  # no action anywhere
    answer = client.post("/webhooks/admin", content=body3, headers=headers3)
    assert answer.status_code == 422 and answer.json()["errors"][0]["loc"] == ["action"]
    assert count_events(clean_db) == 2


def test_duplicate_delivery_is_200_and_one_row(client: TestClient, clean_db: sa.Engine) -> None:
    body, headers = shopify_request({"id": 5}, webhook_id="same-id")
    first = client.post("/webhooks/shopify", content=body, headers=headers)
    second = client.post("/webhooks/shopify", content=body, headers=headers)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.json()["status"], second.json()["status"]) == ("accepted", "duplicate")
    assert count_events(clean_db) == 1
    metrics = client.get("/metrics").text
    assert 'webhook_duplicates_total{source="shopify"} 1.0' in metrics
    assert 'webhook_received_total{source="shopify"} 1.0' in metrics


def test_body_over_limit_is_413(database_url: str, clean_db: sa.Engine) -> None:
    app = create_app(make_settings(database_url, max_body_bytes=1000))
    with TestClient(app) as client:
        body, headers = shopify_request({"id": 1, "pad": "x" * 2000})
        assert client.post("/webhooks/shopify", content=body, headers=headers).status_code == 413

        def chunks():  # no Content-Length: the streamed length is checked too
            yield body[:600]
            yield body[600:]

        answer = client.post("/webhooks/shopify", content=chunks(), headers=headers)
        assert answer.status_code == 413
        assert 'reason="too_large"' in client.get("/metrics").text
    assert count_events(clean_db) == 0


@pytest.mark.parametrize("body", [b"not json", b'{"a": ', b"", b"\xff\xfe", b"NaN"])
def test_malformed_body_is_400(client: TestClient, clean_db: sa.Engine, body: bytes) -> None:
    _, headers = shopify_request({})
    signed_body, headers = shopify_request(body=body)
    assert client.post("/webhooks/shopify", content=signed_body, headers=headers).status_code == 400
    assert count_events(clean_db) == 0


def test_missing_delivery_headers_is_400(client: TestClient, clean_db: sa.Engine) -> None:
    for header in ("X-Shopify-Webhook-Id", "X-Shopify-Topic", "X-Shopify-Shop-Domain"):
        body, headers = shopify_request({"id": 1})
        del headers[header]
        assert client.post("/webhooks/shopify", content=body, headers=headers).status_code == 400
    body, headers = klaviyo_request({"data": []})
    del headers["Klaviyo-Webhook-Id"]
    assert client.post("/webhooks/klaviyo", content=body, headers=headers).status_code == 400
    assert count_events(clean_db) == 0


def test_nul_characters_are_stored_without_them(client: TestClient, clean_db: sa.Engine) -> None:
    body, headers = shopify_request(body=b'{"id": 3, "note": "a\\u0000b"}')
    assert client.post("/webhooks/shopify", content=body, headers=headers).status_code == 200
    with clean_db.connect() as conn:
        assert conn.execute(sa.text("SELECT payload->>'note' FROM webhook_events")).scalar() == "ab"


def test_rate_limit_is_429_with_retry_after(database_url: str, clean_db: sa.Engine) -> None:
    settings = make_settings(database_url, rate_limit_per_shop="3/minute")
    with TestClient(create_app(settings)) as client:
        answers = []
        for _ in range(5):
            body, headers = shopify_request({"id": 1})
            answers.append(client.post("/webhooks/shopify", content=body, headers=headers))
        assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
        assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
        # Another shop has its own window.
        body, headers = shopify_request({"id": 1}, shop="other.myshopify.com")
        assert client.post("/webhooks/shopify", content=body, headers=headers).status_code == 200
    assert count_events(clean_db) == 4


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert "webhook_landing_seconds_bucket" in client.get("/metrics").text


def test_settings_refuse_placeholder_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SHOPIFY_WEBHOOK_SECRET",
        "KLAVIYO_WEBHOOK_SECRET",
        "ADMIN_WEBHOOK_SECRET",
        "CRM_DEMO",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="SHOPIFY_WEBHOOK_SECRET"):
        WebhookSettings()
    monkeypatch.setenv("SHOPIFY_WEBHOOK_SECRET", "changethis")
    monkeypatch.setenv("KLAVIYO_WEBHOOK_SECRET", "a-real-secret-1234")
    monkeypatch.setenv("ADMIN_WEBHOOK_SECRET", "a-real-secret-5678")
    with pytest.raises(ValueError, match="SHOPIFY_WEBHOOK_SECRET"):
        WebhookSettings()
    monkeypatch.setenv("CRM_DEMO", "1")
    demo = WebhookSettings()
    assert demo.secret("shopify") == b"changethis" or demo.demo
    monkeypatch.delenv("SHOPIFY_WEBHOOK_SECRET")
    assert WebhookSettings().secret("shopify") == b"demo-shopify-webhook-secret"


def test_payload_json_in_logs_is_not_emitted(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    body, headers = shopify_request({"id": 9, "email": "secret.person@example.com"})
    headers["X-Shopify-Hmac-Sha256"] = "AAAA"
    client.post("/webhooks/shopify", content=body, headers=headers)
    client.post("/webhooks/shopify", content=json.dumps({"email": "p@q.r"}), headers={})
    assert "secret.person@example.com" not in caplog.text
    assert "p@q.r" not in caplog.text
