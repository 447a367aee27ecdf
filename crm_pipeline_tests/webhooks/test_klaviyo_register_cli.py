"""`crm-pipeline webhooks register --source klaviyo` run as a command against the sandbox.

Every exchange the command has with the sandbox is recorded and validated against Klaviyo's
OpenAPI description, so the Webhooks API calls are the real API's calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner, Result

from crm_pipeline.cli import app
from crm_pipeline.mapping.klaviyo import KLAVIYO_WEBHOOK_TOPICS, METRIC_ACTIVITY
from crm_pipeline.sandbox.klaviyo_webhooks import SANDBOX_TOPICS
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline.sources.klaviyo import KlaviyoClient
from crm_pipeline.sources.klaviyo_webhooks import KlaviyoWebhooksApi
from crm_pipeline.webhooks.klaviyo_subscriptions import description_for
from crm_pipeline_tests.contracts import klaviyo_openapi as spec
from crm_pipeline_tests.contracts.recording_proxy import RecordingProxy
from crm_pipeline_tests.sources.conftest import write_store

ADDRESS = "https://crm.example.com/webhooks/klaviyo"
SECRET = "klaviyo-webhook-secret-for-tests"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("klaviyo-webhooks-store")
    write_store(root)
    return root


@pytest.fixture
def sandbox(store: Path) -> Iterator[tuple[SandboxServer, RecordingProxy]]:
    # the webhook endpoints' 1/s limit is tested with the contract tests; here it only slows
    with SandboxServer(store, klaviyo_rate_limits=False) as server:
        with RecordingProxy(server.url) as proxy:
            yield server, proxy


def _register(proxy: RecordingProxy, *args: str, secret: str | None = SECRET) -> Result:
    env = {"KLAVIYO_API_URL": proxy.url, "KLAVIYO_API_KEY": None, "KLAVIYO_WEBHOOK_SECRET": secret}
    command = ["webhooks", "register", "--source", "klaviyo", "--address", ADDRESS, *args]
    return CliRunner().invoke(app, command, env=env)


def _writes(proxy: RecordingProxy) -> list[str]:
    return [f"{ex.method} {ex.path}" for ex in proxy.exchanges if ex.method != "GET"]


def _conform(proxy: RecordingProxy) -> None:
    found = {str(ex): spec.problems(ex) for ex in proxy.exchanges}
    assert {k: v for k, v in found.items() if v} == {}


def test_handled_topics_are_klaviyo_topics_of_metrics_we_apply() -> None:
    assert set(KLAVIYO_WEBHOOK_TOPICS.values()) <= set(METRIC_ACTIVITY)
    assert set(KLAVIYO_WEBHOOK_TOPICS) <= set(SANDBOX_TOPICS)


def test_register_subscribes_our_topics_once_then_leaves_them(sandbox) -> None:
    server, proxy = sandbox
    first = _register(proxy)
    assert first.exit_code == 0, first.output
    hooks = list(server.state.klaviyo_webhooks._hooks.values())
    assert len(hooks) == 1
    hook = hooks[0]
    assert set(hook.topics) == set(KLAVIYO_WEBHOOK_TOPICS)
    assert (hook.endpoint_url, hook.secret_key) == (ADDRESS, SECRET)
    assert f"created webhook {hook.id}" in first.output
    assert _writes(proxy) == ["POST /api/webhooks"]

    second = _register(proxy)
    assert second.exit_code == 0, second.output
    assert f"keep webhook {hook.id}" in second.output
    assert _writes(proxy) == ["POST /api/webhooks"]  # nothing new was written
    assert list(server.state.klaviyo_webhooks._hooks.values()) == [hook]
    _conform(proxy)


def test_dry_run_prints_the_plan_and_changes_nothing(sandbox) -> None:
    server, proxy = sandbox
    result = _register(proxy, "--dry-run", secret=None)
    assert result.exit_code == 0, result.output
    assert f"create webhook crm-pipeline -> {ADDRESS}" in result.output
    for topic in KLAVIYO_WEBHOOK_TOPICS:
        assert f"+ {topic}" in result.output
    assert "dry run: nothing changed" in result.output
    assert _writes(proxy) == [] and server.state.klaviyo_webhooks._hooks == {}
    _conform(proxy)


def test_changed_topics_are_updated_in_place(sandbox) -> None:
    server, proxy = sandbox
    api = KlaviyoWebhooksApi(KlaviyoClient("pk_test", api_url=server.url))
    old_topics = {"event:klaviyo.opened_email", "event:klaviyo.sent_sms"}
    ours = api.create("crm-pipeline", description_for(ADDRESS), ADDRESS, "old", old_topics)
    other = api.create("someone else", "theirs", "https://other.example.com/", "x", old_topics)

    planned = _register(proxy, "--dry-run")
    assert f"update webhook {ours.id} -> {ADDRESS}" in planned.output
    assert "- event:klaviyo.sent_sms" in planned.output
    assert "+ event:klaviyo.clicked_email" in planned.output
    assert _writes(proxy) == []

    result = _register(proxy)
    assert result.exit_code == 0, result.output
    assert _writes(proxy) == [f"PATCH /api/webhooks/{ours.id}"]
    hooks = server.state.klaviyo_webhooks._hooks
    assert set(hooks) == {ours.id, other.id}
    assert set(hooks[ours.id].topics) == set(KLAVIYO_WEBHOOK_TOPICS)
    assert hooks[ours.id].secret_key == SECRET  # the receiver's secret, not the stale one
    assert set(hooks[other.id].topics) == old_topics and hooks[other.id].secret_key == "x"
    assert "keep webhook" in _register(proxy).output
    _conform(proxy)


def test_topics_the_account_lacks_are_reported_not_requested(sandbox) -> None:
    server, proxy = sandbox
    server.state.klaviyo_webhooks.topics = tuple(
        t for t in SANDBOX_TOPICS if t != "event:klaviyo.clicked_sms"
    )
    result = _register(proxy)
    assert result.exit_code == 0, result.output
    assert "not offered by this Klaviyo account: event:klaviyo.clicked_sms" in result.output
    created = next(ex for ex in proxy.exchanges if ex.method == "POST")
    topics = orjson.loads(created.request_body)["data"]["relationships"]["webhook-topics"]
    assert {ref["id"] for ref in topics["data"]} == set(KLAVIYO_WEBHOOK_TOPICS) - {
        "event:klaviyo.clicked_sms"
    }
    _conform(proxy)


@pytest.mark.parametrize(
    ("args", "secret", "message"),
    [
        ((), None, "KLAVIYO_WEBHOOK_SECRET"),
        (("--address", "http://crm.example.com/webhooks/klaviyo"), SECRET, "https"),
    ],
)
def test_refusals_exit_2_and_write_nothing(sandbox, args, secret, message) -> None:
    _, proxy = sandbox
    result = _register(proxy, *args, secret=secret)
    assert result.exit_code == 2
    assert message in result.output
    assert _writes(proxy) == []


def test_unknown_source_is_refused(sandbox) -> None:
    _, proxy = sandbox
    command = ["webhooks", "register", "--source", "mailchimp", "--address", ADDRESS]
    result = CliRunner().invoke(app, command, env={"KLAVIYO_API_URL": proxy.url})
    assert result.exit_code == 2 and proxy.exchanges == []
