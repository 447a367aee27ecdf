"""Klaviyo requests we send and sandbox answers, checked against Klaviyo's OpenAPI description.

The real client (official SDK) pulls through a recording proxy in front of the sandbox; every
request/response pair on the wire is validated against the operation it addresses.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from crm_pipeline.sandbox.generate import generate_store
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline.sources.errors import SourceError
from crm_pipeline.sources.klaviyo import KLAVIYO_REVISION, KlaviyoClient
from crm_pipeline.sources.klaviyo_webhooks import KlaviyoWebhooksApi
from crm_pipeline_tests.contracts import klaviyo_openapi as spec
from crm_pipeline_tests.contracts.recording_proxy import Exchange, RecordingProxy
from crm_pipeline_tests.sources.conftest import write_store
from crm_pipeline_tests.sources.helpers import FAST_POLICY


@pytest.fixture(scope="module", params=["generated", "tiny"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generator's store (what the demo serves) and the hand-written test store."""
    root = tmp_path_factory.mktemp(f"klaviyo-{request.param}")
    if request.param == "generated":
        generate_store(root, customers=60, seed=5)
    else:
        write_store(root)
    return root


@pytest.fixture
def recorded(store: Path) -> Iterator[tuple[SandboxServer, RecordingProxy]]:
    with SandboxServer(store) as sandbox, RecordingProxy(sandbox.url) as proxy:
        yield sandbox, proxy


def _client(url: str, **kwargs) -> KlaviyoClient:
    return KlaviyoClient("pk_test", api_url=url, retry_policy=FAST_POLICY, **kwargs)


def _assert_conform(exchanges: list[Exchange]) -> None:
    found = {str(ex): spec.problems(ex) for ex in exchanges}
    assert {k: v for k, v in found.items() if v} == {}


def _raw(url: str, method: str, path: str, headers: dict[str, str]) -> None:
    """One hand-made request through the proxy (for answers our client never provokes)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(method, path, headers=headers)
    conn.getresponse().read()
    conn.close()


def test_full_and_incremental_pull_conform(recorded) -> None:
    _, proxy = recorded
    client = _client(proxy.url, page_size=7, events_page_size=50)
    since = datetime(2024, 1, 10, tzinfo=UTC)
    assert list(client.profiles())
    assert list(client.predictive_profiles())
    list(client.profiles(updated_since=since, with_predictive=False))
    assert client.metrics()
    assert list(client.events())
    list(client.events(since, metric_names={"Opened Email", "Placed Order"}))
    _assert_conform(proxy.exchanges)
    operations = {spec.operation_id(ex.method, ex.path) for ex in proxy.exchanges}
    assert operations == {"get_profiles", "get_metrics", "get_events"}
    # paging really happened, and each next page was asked for with the cursor it was given
    links = [ex.json()["links"] for ex in proxy.exchanges]
    given = [
        parse_qs(urlsplit(link["next"]).query)["page[cursor]"][0]
        for link in links
        if "next" in link
    ]
    asked = [v for ex in proxy.exchanges for k, v in ex.query if k == "page[cursor]"]
    assert len(given) >= 3 and sorted(asked) == sorted(given)
    # every pull ends exactly once: as many last pages (no `next`) as first pages (no cursor)
    firsts = [ex for ex in proxy.exchanges if "page[cursor]" not in dict(ex.query)]
    assert sum("next" not in link for link in links) == len(firsts)


def _additional_fields(ex: Exchange) -> str:
    return ",".join(v for k, v in ex.query if k == "additional-fields[profile]")


def test_default_profile_pull_never_asks_for_predictions(recorded) -> None:
    """The default pull stays under the 700/min limit: no page asks for predictive_analytics,
    and the client counts every page against the plain profiles bucket."""
    _, proxy = recorded
    client = _client(proxy.url, page_size=7)
    pulled = list(client.profiles())
    pages = [ex for ex in proxy.exchanges if ex.path.rstrip("/").endswith("/profiles")]
    assert len(pages) >= 2 and pulled
    assert all("predictive_analytics" not in _additional_fields(ex) for ex in pages)
    assert all("subscriptions" in _additional_fields(ex) for ex in pages)
    assert all("predictive_analytics" not in p["attributes"] for p in pulled)
    assert dict(client.usage.klaviyo_requests) == {"profiles": len(pages)}


def test_predictive_stream_asks_for_predictions(recorded) -> None:
    _, proxy = recorded
    client = _client(proxy.url, page_size=7)
    pulled = list(client.predictive_profiles())
    pages = [ex for ex in proxy.exchanges if ex.path.rstrip("/").endswith("/profiles")]
    assert pages and all("predictive_analytics" in _additional_fields(ex) for ex in pages)
    assert all("predictive_analytics" in p["attributes"] for p in pulled)
    assert dict(client.usage.klaviyo_requests) == {"profiles_predictive": len(pages)}


def test_every_request_declares_the_described_revision(recorded) -> None:
    _, proxy = recorded
    list(_client(proxy.url).profiles(with_predictive=False))
    assert KLAVIYO_REVISION == spec.revision()
    assert {ex.header("revision") for ex in proxy.exchanges} == {spec.revision()}
    assert {ex.header("Accept") for ex in proxy.exchanges} == {spec.JSON_API}


def test_profile_point_lookup_conforms(recorded, store: Path) -> None:
    _, proxy = recorded
    client = _client(proxy.url)
    first = orjson.loads((store / "klaviyo" / "profiles.jsonl").read_bytes().splitlines()[0])
    api = client.api.Profiles
    found = client._call(
        api.get_profile, id=first["id"], additional_fields_profile=["subscriptions"]
    )
    assert found["data"]["id"] == first["id"]
    assert found["data"]["attributes"]["email"] == first["attributes"]["email"]
    assert "predictive_analytics" not in found["data"]["attributes"]
    with pytest.raises(SourceError) as missing:
        client._call(api.get_profile, id="01NOSUCHPROFILE0000000000")
    assert missing.value.status == 404
    assert [ex.status for ex in proxy.exchanges] == [200, 404]
    assert all(spec.operation_id("GET", ex.path) == "get_profile" for ex in proxy.exchanges)
    _assert_conform(proxy.exchanges)


def test_events_with_included_metric_and_profile_conform(recorded) -> None:
    _, proxy = recorded
    client = _client(proxy.url)
    page = client._call(client.api.Events.get_events, include=["metric", "profile"], page_size=9)
    kinds = {(item["type"], item["id"]) for item in page["included"]}
    for event in page["data"]:
        for kind in ("metric", "profile"):
            ref = event["relationships"][kind]["data"]
            assert (kind, ref["id"]) in kinds
    _assert_conform(proxy.exchanges)


def test_rate_limited_answer_conforms_and_is_waited_out(store: Path) -> None:
    # webhook endpoints allow one request a second: the second call is a 429 the client waits
    with SandboxServer(store) as sandbox, RecordingProxy(sandbox.url) as proxy:
        api = KlaviyoWebhooksApi(_client(proxy.url))
        assert api.topics() == api.topics()
    limited = [ex for ex in proxy.exchanges if ex.status == 429]
    assert limited and proxy.exchanges[-1].status == 200
    assert all(int(ex.response_header("Retry-After")) >= 1 for ex in limited)
    assert limited[0].json()["errors"][0]["code"] == "throttled"
    _assert_conform(proxy.exchanges)


def test_injected_faults_and_refusals_conform(store: Path) -> None:
    good = {"Authorization": "Klaviyo-API-Key pk_test", "revision": spec.revision()}
    with SandboxServer(store, rate_limit_429=1.0) as sandbox, RecordingProxy(sandbox.url) as p:
        _raw(p.url, "GET", "/api/profiles/", good)
    with SandboxServer(store) as sandbox, RecordingProxy(sandbox.url) as proxy:
        _raw(proxy.url, "GET", "/api/profiles/", {"revision": spec.revision()})
        _raw(proxy.url, "GET", "/api/profiles/", {**good, "revision": "latest"})
        _raw(proxy.url, "GET", "/api/profiles/?page%5Bsize%5D=1000", good)
    answers = [*p.exchanges, *proxy.exchanges]
    assert [ex.status for ex in answers] == [429, 401, 400, 400]
    assert all(spec.response_problems(ex) == [] for ex in answers), [
        spec.response_problems(ex) for ex in answers
    ]
    # the requests were wrong on purpose, and the validator says so
    assert spec.request_problems(proxy.exchanges[0]) != []
    assert spec.request_problems(proxy.exchanges[1]) != []


def test_validator_refuses_what_the_sandbox_used_to_answer(recorded) -> None:
    """The disagreements fixed here would each be caught: plain JSON, null links, no revision."""
    _, proxy = recorded
    list(_client(proxy.url, page_size=100).profiles(with_predictive=False))
    good = proxy.exchanges[0]
    assert spec.problems(good) == []
    body = orjson.loads(good.response_body)
    body["links"] = {**body["links"], "next": None, "prev": None}
    variants = {
        "media type": {"response_headers": {"Content-Type": "application/json; charset=utf-8"}},
        "null links": {"response_body": orjson.dumps(body)},
        "SDK revision": {"request_headers": {**good.request_headers, "revision": "2026-10-15"}},
        "no Retry-After": {"status": 429, "response_body": b'{"errors": []}'},
    }
    for name, change in variants.items():
        changed = Exchange(**{**good.__dict__, **change})
        assert spec.problems(changed), name
