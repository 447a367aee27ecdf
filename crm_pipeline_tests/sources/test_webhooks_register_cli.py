"""`crm-pipeline webhooks register`, run as a command against the sandbox.

The sandbox checks every topic against the `WebhookSubscriptionTopic` enum of the API version
in the request path (Shopify's published schema), so a topic name the real API would refuse
fails here too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from crm_pipeline.cli import app
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline.shopify_admin_schema import enum_values, newest_version, versions
from crm_pipeline.sources.shopify import COMPLIANCE_TOPICS, ShopifyClient, webhook_topic
from crm_pipeline.webhooks.topics import SHOPIFY_HANDLERS
from crm_pipeline_tests.sources.helpers import FAST_POLICY

ADDRESS = "https://crm.example.com/webhooks/shopify"
MOVED = "https://crm2.example.com/webhooks/shopify"


@pytest.fixture
def shop(tiny_store, monkeypatch, request) -> Iterator[tuple[SandboxServer, str]]:
    """A fresh sandbox (no subscriptions) and the environment that points the CLI at it."""
    version = getattr(request, "param", newest_version())
    with SandboxServer(tiny_store[0], bulk_seconds=0.05) as server:
        monkeypatch.setenv("SHOPIFY_API_URL", server.url)
        monkeypatch.setenv("SHOPIFY_ACCESS_TOKEN", "shpat_test")
        monkeypatch.setenv("SHOPIFY_API_VERSION", version)
        yield server, version


def _register(*args: str) -> str:
    result = CliRunner().invoke(app, ["webhooks", "register", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _subscriptions(server: SandboxServer, version: str) -> list[dict]:
    client = ShopifyClient(
        None, "shpat_test", api_version=version, api_url=server.url, retry_policy=FAST_POLICY
    )
    return client.webhook_subscriptions()


@pytest.mark.parametrize("shop", versions(), indirect=True)
def test_register_subscribes_exactly_the_valid_topics_then_is_a_no_op(shop) -> None:
    server, version = shop
    enum = enum_values(version, "WebhookSubscriptionTopic")
    handled = {webhook_topic(t) for t in SHOPIFY_HANDLERS}
    expected = handled & enum

    output = _register("--address", ADDRESS)
    subs = _subscriptions(server, version)
    assert sorted(s["topic"] for s in subs) == sorted(expected)  # each once
    assert all(s["callback_url"] == ADDRESS for s in subs)
    assert {s["topic"] for s in subs} <= enum
    assert f"created: {len(expected)} " in output
    for missing in sorted(handled - enum):  # e.g. CUSTOMERS_PURCHASING_SUMMARY before 2025-01
        assert missing in output.split("skipped")[1]
    # compliance topics are never requested: they come as shopify.app.toml lines instead
    for topic in COMPLIANCE_TOPICS:
        assert webhook_topic(topic) not in output
    assert (
        'compliance_topics = ["customers/data_request", "customers/redact", "shop/redact"]'
        in output
    )
    assert f'uri = "{ADDRESS}"' in output and f'api_version = "{version}"' in output

    again = _register("--address", ADDRESS)
    assert "created: 0 " in again and "updated: 0 " in again
    assert f"kept: {len(expected)} " in again
    assert _subscriptions(server, version) == subs


def test_a_moved_address_is_updated_and_dry_run_changes_nothing(shop) -> None:
    server, version = shop
    _register("--address", ADDRESS)
    before = _subscriptions(server, version)

    plan = _register("--address", MOVED, "--dry-run")
    assert "dry run" in plan and f"would be updated: {len(before)} " in plan
    assert _subscriptions(server, version) == before

    _register("--address", MOVED)
    after = _subscriptions(server, version)
    assert [(s["id"], s["topic"]) for s in after] == [(s["id"], s["topic"]) for s in before]
    assert all(s["callback_url"] == MOVED for s in after)


def test_dry_run_on_a_new_shop_creates_nothing(shop) -> None:
    server, version = shop
    plan = _register("--address", ADDRESS, "--dry-run")
    assert "would be created: " in plan
    assert _subscriptions(server, version) == []


def test_every_handled_topic_is_a_topic_of_the_newest_api_version() -> None:
    """The default version subscribes everything the pipeline applies; nothing is skipped."""
    enum = enum_values(newest_version(), "WebhookSubscriptionTopic")
    assert {webhook_topic(t) for t in SHOPIFY_HANDLERS} <= enum
    assert webhook_topic("customer.tags_added") == "CUSTOMER_TAGS_ADDED"
