"""KlaviyoClient through the real SDK against the sandbox over a tiny store."""

from __future__ import annotations

from datetime import datetime

import pytest

from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline.sources.errors import AuthError
from crm_pipeline.sources.http import SourceRetryPolicy
from crm_pipeline.sources.klaviyo import KlaviyoClient, next_cursor
from crm_pipeline_tests.sources.helpers import FAST_POLICY

QUICK_PREDICTIVE = SourceRetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02)


def _client(server: SandboxServer, **kwargs) -> KlaviyoClient:
    return KlaviyoClient(
        "pk_test",
        api_url=server.url,
        retry_policy=FAST_POLICY,
        predictive_policy=QUICK_PREDICTIVE,
        **kwargs,
    )


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_next_cursor_from_http_links() -> None:
    url = "http://127.0.0.1:1/api/profiles?page%5Bsize%5D=7&page%5Bcursor%5D=abc%3D%3D"
    assert next_cursor({"next": url}) == "abc=="
    assert next_cursor({"next": None}) is None
    assert next_cursor(None) is None


def test_profiles_paginate_through_all(sandbox: SandboxServer, tiny_store) -> None:
    _, rows = tiny_store
    before = sandbox.state.counters.get("klaviyo_requests", 0)
    pulled = list(_client(sandbox, page_size=7).profiles())
    assert sandbox.state.counters["klaviyo_requests"] - before >= 6
    assert sorted(p["id"] for p in pulled) == sorted(p["id"] for p in rows["profiles"])
    assert all(p["type"] == "profile" for p in pulled)
    assert all("predictive_analytics" not in p["attributes"] for p in pulled)
    updated = [_dt(p["attributes"]["updated"]) for p in pulled]
    assert updated == sorted(updated)


def test_profiles_updated_since_is_strict(sandbox: SandboxServer, tiny_store) -> None:
    _, rows = tiny_store
    since = _dt(rows["profiles"][10]["attributes"]["updated"])
    pulled = list(
        _client(sandbox, page_size=5).profiles(updated_since=since, with_predictive=False)
    )
    expected = {p["id"] for p in rows["profiles"] if _dt(p["attributes"]["updated"]) > since}
    assert {p["id"] for p in pulled} == expected
    assert all("predictive_analytics" not in p["attributes"] for p in pulled)


def test_predictive_503_falls_back_without_losing_profiles(tiny_store) -> None:
    root, rows = tiny_store
    with SandboxServer(root, predictive_fault_rate=1.0) as server:
        pulled = list(_client(server, page_size=9).predictive_profiles())
    assert sorted(p["id"] for p in pulled) == sorted(p["id"] for p in rows["profiles"])
    assert not any("predictive_analytics" in p["attributes"] for p in pulled)

    with SandboxServer(root, predictive_fault_rate=0.5, seed=2) as server:
        pulled = list(_client(server, page_size=5).predictive_profiles())
    assert sorted(p["id"] for p in pulled) == sorted(p["id"] for p in rows["profiles"])
    assert any("predictive_analytics" in p["attributes"] for p in pulled)


def test_events_with_metric_names_and_since(sandbox: SandboxServer, tiny_store) -> None:
    _, rows = tiny_store
    client = _client(sandbox, events_page_size=11)
    assert client.metrics() == {m["id"]: m["attributes"]["name"] for m in rows["metrics"]}
    every = list(client.events())
    assert sorted(e["id"] for e in every) == sorted(e["id"] for e in rows["events"])
    assert all(e["attributes"]["metric_name"] for e in every)

    since = _dt("2024-01-15T00:00:00Z")
    wanted = {"Opened Email", "Placed Order"}
    names = {"MtOpen": "Opened Email", "MtClick": "Clicked Email", "MtView": "Viewed Product"}
    names["MtOrder"] = "Placed Order"
    expected = {
        e["id"]
        for e in rows["events"]
        if _dt(e["attributes"]["datetime"]) > since
        and names[e["relationships"]["metric"]["data"]["id"]] in wanted
    }
    got = list(client.events(since=since, metric_names=wanted))
    assert {e["id"] for e in got} == expected
    assert {e["attributes"]["metric_name"] for e in got} == wanted


def test_faults_and_rate_limits_still_return_everything(tiny_store) -> None:
    root, rows = tiny_store
    with SandboxServer(root, fault_rate=0.2, rate_limit_429=0.1, seed=5) as server:
        client = _client(server, page_size=6, events_page_size=13)
        profiles = list(client.profiles())
        events = list(client.events())
        # the metrics endpoint allows 10/s: hammering it meets real 429s with Retry-After
        for _ in range(25):
            client.metrics()
        counters = server.state.counters
    assert sorted(p["id"] for p in profiles) == sorted(p["id"] for p in rows["profiles"])
    assert sorted(e["id"] for e in events) == sorted(e["id"] for e in rows["events"])
    assert counters.get("injected_5xx", 0) > 0
    assert counters.get("klaviyo_rate_limited", 0) > 0


def test_missing_key_is_an_auth_error(sandbox: SandboxServer) -> None:
    client = KlaviyoClient("", api_url=sandbox.url, retry_policy=FAST_POLICY)
    with pytest.raises(AuthError):
        client.metrics()
