"""firestore.rules in the emulator: staff read the mirror, nobody else does, no client writes.

Requests go through the REST API as the app's clients would: no Authorization header
(unauthenticated), an unsigned ID token without the claim (signed-in, not staff) and one with
`staff: true`. The emulator accepts unsigned (`alg: none`) tokens. The pipeline's own
credentials (`Bearer owner` in the emulator) bypass the rules and must keep working.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crm_pipeline.firestore.emulator import OPEN_RULES, load_rules
from crm_pipeline_tests.fixtures.firestore import TEST_PROJECT

RULES = Path(__file__).resolve().parents[2] / "firestore.rules"
CUSTOMER = "customers/0b5f7a2e-7a53-4a43-9d54-3bc0b8b1f0a1"
# every collection the mirror writes, as docs/firestore-mirror.md#security-rules lists them
MIRROR_DOCUMENTS = (
    CUSTOMER,
    f"{CUSTOMER}/orders/o1",
    f"{CUSTOMER}/activities/a1",
    f"{CUSTOMER}/addresses/ad1",
    f"{CUSTOMER}/notes/n1",
    "stats/current",
    "stats/history/days/2026-12-02",
    "segments/vip",
    "admin_actions/act-1",
    "recent_activity/x1",
)
OTHER_DOCUMENT = "unlisted/doc1"


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def id_token(uid: str, **claims: object) -> str:
    """An unsigned Firebase ID token, as the Auth emulator issues them."""
    now = int(time.time())
    payload = {
        "iss": f"https://securetoken.google.com/{TEST_PROJECT}",
        "aud": TEST_PROJECT,
        "auth_time": now,
        "iat": now,
        "exp": now + 3600,
        "sub": uid,
        "user_id": uid,
        "firebase": {"sign_in_provider": "password", "identities": {}},
        **claims,
    }
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."


CALLERS = {
    "unauthenticated": None,
    "signed_in": id_token("user-1", email="someone@example.com"),
    "staff_false": id_token("user-2", staff=False),
    "staff": id_token("staff-1", staff=True),
}
OWNER = "owner"


@pytest.fixture(scope="module")
def rules_host(firestore_emulator: str) -> Iterator[str]:
    """The emulator with firestore.rules loaded and every mirror document present."""
    load_rules(firestore_emulator, TEST_PROJECT, RULES.read_text())
    try:
        for path in (*MIRROR_DOCUMENTS, OTHER_DOCUMENT):
            response = _request(firestore_emulator, "PATCH", path, OWNER, {"seeded": True})
            assert response.status_code == 200, response.text
        yield firestore_emulator
    finally:
        load_rules(firestore_emulator, TEST_PROJECT, OPEN_RULES)


def _url(host: str, path: str = "") -> str:
    base = f"http://{host}/v1/projects/{TEST_PROJECT}/databases/(default)/documents"
    return f"{base}/{path}" if path else base


def _request(
    host: str, method: str, path: str, token: str | None, fields: dict[str, bool] | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = None
    if fields is not None:
        body = {"fields": {k: {"booleanValue": v} for k, v in fields.items()}}
    return httpx.request(method, _url(host, path), headers=headers, json=body, timeout=30.0)


def _query(host: str, collection: str, token: str | None) -> httpx.Response:
    """A list query on a top-level collection (the `list` rule, not `get`)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"structuredQuery": {"from": [{"collectionId": collection}], "limit": 5}}
    return httpx.post(f"{_url(host)}:runQuery", headers=headers, json=body, timeout=30.0)


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize("path", MIRROR_DOCUMENTS)
def test_only_staff_read_the_mirror(rules_host: str, caller: str, path: str) -> None:
    response = _request(rules_host, "GET", path, CALLERS[caller])
    if caller == "staff":
        assert response.status_code == 200, response.text
        assert response.json()["fields"]["seeded"] == {"booleanValue": True}
    else:
        assert response.status_code == 403, response.text


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize(
    "collection", ["customers", "segments", "admin_actions", "recent_activity", "stats"]
)
def test_only_staff_list_the_mirror(rules_host: str, caller: str, collection: str) -> None:
    response = _query(rules_host, collection, CALLERS[caller])
    if caller == "staff":
        assert response.status_code == 200, response.text
        assert any("document" in item for item in response.json())
    else:
        assert response.status_code == 403, response.text


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize("path", (*MIRROR_DOCUMENTS, OTHER_DOCUMENT, "customers/new-one"))
def test_no_client_writes(rules_host: str, caller: str, path: str) -> None:
    token = CALLERS[caller]
    assert _request(rules_host, "PATCH", path, token, {"forged": True}).status_code == 403
    assert _request(rules_host, "DELETE", path, token).status_code == 403
    # nothing changed: the owner still reads the seeded document (or none, for the new path)
    after = _request(rules_host, "GET", path, OWNER)
    if path == "customers/new-one":
        assert after.status_code == 404
    else:
        assert after.json()["fields"] == {"seeded": {"booleanValue": True}}


def test_documents_outside_the_mirror_are_closed_even_to_staff(rules_host: str) -> None:
    assert _request(rules_host, "GET", OTHER_DOCUMENT, CALLERS["staff"]).status_code == 403


def test_the_pipeline_still_writes_and_deletes(rules_host: str) -> None:
    path = f"{CUSTOMER}/orders/o2"
    assert _request(rules_host, "PATCH", path, OWNER, {"written": True}).status_code == 200
    assert _request(rules_host, "GET", path, CALLERS["staff"]).status_code == 200
    assert _request(rules_host, "DELETE", path, OWNER).status_code == 200
    assert _request(rules_host, "GET", path, CALLERS["staff"]).status_code == 404


def test_the_python_client_writes_through_the_rules(rules_host: str) -> None:
    """The mirror's own client (emulator credentials) is not subject to the rules."""
    from google.cloud import firestore

    client = firestore.Client(project=TEST_PROJECT)
    client.document("segments/from-client").set({"n": 1})
    assert client.document("segments/from-client").get().to_dict() == {"n": 1}
    client.document("segments/from-client").delete()
