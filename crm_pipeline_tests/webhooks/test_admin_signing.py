"""POST /webhooks/admin signs everything that decides the effect; GET reports the action's state.

A captured request cannot be relabelled as another action, edited, or replayed after the
window; an invalid action is 422 and stores nothing; the status route follows the action from
received to applied through the real processing path.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crm_pipeline.webhooks.admin_actions import ADMIN_HANDLERS
from crm_pipeline_tests.webhooks.conftest import count_events
from crm_pipeline_tests.webhooks.helpers import (
    admin_request,
    admin_signature_headers,
    admin_status_headers,
    shopify_request,
)
from crm_pipeline_tests.webhooks.test_processing_support import (
    at,
    customer_by_shopify_id,
    run,
    shopify_customer,
)

PERSON = "00000000-0000-4000-8000-000000000001"
EMAIL = "staff.secret.person@example.com"


def _post(client: TestClient, body: bytes, headers: dict[str, str]) -> int:
    return client.post("/webhooks/admin", content=body, headers=headers).status_code


def test_captured_tags_request_cannot_become_another_action(
    client: TestClient, clean_db: sa.Engine
) -> None:
    body, headers = admin_request(
        {"action": "customer.tags", "customer_id": PERSON, "add": ["vip"]}, action_id="act-1"
    )
    # relabelled inside the body (the action is signed now) with a fresh id: refused
    document = json.loads(body)
    relabelled = json.dumps({**document, "action": "customer.delete", "action_id": "act-2"})
    assert _post(client, relabelled.encode(), headers) == 401
    # the old attack: the unsigned headers are not read at all
    assert _post(client, body, {**headers, "X-Crm-Action": "customer.delete"}) == 200
    assert _post(client, body, {**headers, "X-Crm-Action-Id": "act-3"}) == 200  # duplicate
    with clean_db.connect() as conn:
        rows = conn.execute(sa.text("SELECT topic, delivery_id FROM webhook_events")).all()
    assert [tuple(r) for r in rows] == [("customer.tags", "act-1")]


def test_edited_body_and_stale_timestamp_are_401(client: TestClient, clean_db: sa.Engine) -> None:
    body, headers = admin_request(
        {"action": "customer.note", "customer_id": PERSON, "internal_notes": "calls only"}
    )
    edited = body.replace(b"calls only", b"calls never")
    assert _post(client, edited, headers) == 401
    # a correctly signed request whose timestamp is 10 minutes old
    old_body, old_headers = admin_request(
        {"action": "customer.block", "customer_id": PERSON}, timestamp=time.time() - 600
    )
    answer = client.post("/webhooks/admin", content=old_body, headers=old_headers)
    assert (answer.status_code, answer.json()["reason"]) == (401, "stale_timestamp")
    # ... and the same captured request with a fresh timestamp header: the signature breaks
    fresh = {**old_headers, "X-Crm-Timestamp": str(int(time.time()))}
    assert client.post("/webhooks/admin", content=old_body, headers=fresh).json()["reason"] == (
        "bad_signature"
    )
    # unsigned, or signed with the body alone (the old scheme)
    assert _post(client, body, {"Content-Type": "application/json"}) == 401
    assert _post(client, body, {**headers, "X-Crm-Timestamp": "not-a-number"}) == 401
    assert count_events(clean_db) == 0


@pytest.mark.parametrize(
    "payload",
    [
        {"action": "customer.note", "customer_id": PERSON},  # internal_notes missing
        {"action": "customer.tags", "customer_id": PERSON},  # changes no tag
        {"action": "customer.tags", "customer_id": PERSON, "add": [1, 2]},  # not strings
        {"action": "segment.add", "customer_id": PERSON, "segment_name": "x", "segment_type": "?"},
        {"action": "activity.record", "customer_id": PERSON, "activity_type": "teleport"},
        {"action": "customer.block"},  # names no customer
        {"action": "customer.create", "customer": {"email": EMAIL}},  # no admin_id
        {"action": "customer.update", "admin_id": "a", "customer": {"emial": EMAIL}},  # typo
        {"action": "customer.note", "customer_id": PERSON, "internal_notes": "x", "extra": 1},
        {"action": "customer.purge", "customer_id": PERSON},  # unknown action
        {"customer_id": PERSON, "internal_notes": "x"},  # no action at all
        {"action": "customer.note", "customer_id": PERSON, "internal_notes": "x", "action_id": ""},
    ],
)
def test_invalid_action_is_422_and_stores_nothing(
    client: TestClient, clean_db: sa.Engine, payload: dict
) -> None:
    body, headers = admin_request(payload)
    answer = client.post("/webhooks/admin", content=body, headers=headers)
    assert answer.status_code == 422, answer.text
    content = answer.json()
    assert content["reason"] == "invalid_action" and content["errors"]
    assert all({"loc", "msg", "type"} <= set(e) for e in content["errors"])
    assert EMAIL not in answer.text  # the field errors name fields, not values
    assert count_events(clean_db) == 0


def test_not_an_object_and_not_json(client: TestClient, clean_db: sa.Engine) -> None:
    for body, status in ((b"[1, 2]", 422), (b'"customer.note"', 422), (b"{oops", 400)):
        assert _post(client, body, admin_signature_headers(body)) == status
    assert count_events(clean_db) == 0


def _status(client: TestClient, action_id: str, **kwargs: float) -> tuple[int, dict]:
    answer = client.get(
        f"/webhooks/admin/{action_id}", headers=admin_status_headers(action_id, **kwargs)
    )
    return answer.status_code, answer.json()


def test_status_route_follows_the_action_to_applied(
    client: TestClient, clean_db: sa.Engine
) -> None:
    engine = clean_db
    body, headers = shopify_request(shopify_customer(31, at(0)), topic="customers/create")
    assert client.post("/webhooks/shopify", content=body, headers=headers).status_code == 200
    run(engine)
    cid = str(customer_by_shopify_id(engine, 31).id)

    action_id = f"note-{uuid.uuid4()}"
    body, headers = admin_request(
        {"action": "customer.note", "customer_id": cid, "internal_notes": "VIP, call first"},
        action_id=action_id,
    )
    assert _post(client, body, headers) == 200
    assert _status(client, action_id)[1]["state"] == "received"
    report = run(engine)  # the real processing path
    assert report.outcomes["applied"] == 1, report
    status, state = _status(client, action_id)
    assert status == 200 and state["state"] == "applied" and state["outcome"] == "applied"
    assert customer_by_shopify_id(engine, 31).internal_notes == "VIP, call first"


def test_status_route_reports_a_failure_without_personal_data(
    client: TestClient, clean_db: sa.Engine
) -> None:
    body, headers = admin_request(
        {"action": "customer.note", "email": EMAIL, "internal_notes": "x"}, action_id="who"
    )
    assert _post(client, body, headers) == 200
    run(clean_db, max_deliveries=1)  # nobody has that email yet: retried later
    status, state = _status(client, "who")
    assert status == 200 and state["state"] == "failed"
    assert state["reason"] == "customer_not_found"
    assert EMAIL not in json.dumps(state)


def test_status_route_is_signed_and_404_only_after_the_signature(
    client: TestClient, clean_db: sa.Engine
) -> None:
    body, headers = admin_request(
        {"action": "customer.unblock", "customer_id": PERSON}, action_id="a/b c"
    )
    assert _post(client, body, headers) == 200
    assert _status(client, "a/b c")[1]["state"] == "received"  # ids with / and space work
    assert _status(client, "never-sent")[0] == 404
    # unsigned, signed for another id, or 10 minutes old: 401 whether or not the id exists
    for action_id in ("a/b c", "never-sent"):
        url = f"/webhooks/admin/{action_id}"
        assert client.get(url).status_code == 401
        assert client.get(url, headers=admin_status_headers("other")).status_code == 401
        assert _status(client, action_id, timestamp=time.time() - 600)[0] == 401


def test_every_handled_action_has_a_model() -> None:
    from crm_pipeline.webhooks.admin_schema import ADMIN_ACTIONS

    assert sorted(ADMIN_ACTIONS) == sorted(ADMIN_HANDLERS)


def test_documented_payloads_are_valid_actions() -> None:
    from crm_pipeline.webhooks.admin_schema import parse_admin_action

    doc = (Path(__file__).resolve().parents[2] / "docs" / "webhook-processing.md").read_text()
    section = doc[doc.index("## Admin actions") : doc.index("## GDPR")]
    decoder = json.JSONDecoder()
    seen = set()
    for block in re.findall(r"```json\n(.*?)```", section, flags=re.DOTALL):
        block, position = block.strip(), 0
        while position < len(block):
            document, position = decoder.raw_decode(block, position)
            position = len(block) - len(block[position:].lstrip())
            parse_admin_action({**document, "action_id": "doc"})
            seen.add(document["action"])
    assert seen == set(ADMIN_HANDLERS)
