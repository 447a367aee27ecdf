"""Webhook subscriptions: topic names as the API's enum, an idempotent plan, compliance topics."""

from __future__ import annotations

from typing import Any

from crm_pipeline.sources.errors import BadRequest
from crm_pipeline.sources.shopify.base import _ClientBase
from crm_pipeline.sources.shopify.queries import (
    WEBHOOK_CREATE,
    WEBHOOK_TOPICS_QUERY,
    WEBHOOK_UPDATE,
    WEBHOOKS_QUERY,
)

# Shopify's mandatory privacy topics: an app configures them in shopify.app.toml (or the
# Partner Dashboard); the Admin API cannot subscribe them
COMPLIANCE_TOPICS = ("customers/data_request", "customers/redact", "shop/redact")


def webhook_topic(topic: str) -> str:
    """`customers/create`, `customer.tags_added` (the header forms) or `CUSTOMERS_CREATE` -> the
    `WebhookSubscriptionTopic` value (`CUSTOMERS_CREATE`, `CUSTOMER_TAGS_ADDED`)."""
    return topic.strip().replace("/", "_").replace(".", "_").upper()


def compliance_toml(address: str, api_version: str) -> str:
    """The `shopify.app.toml` lines that subscribe Shopify's compliance topics to `address`."""
    topics = ", ".join(f'"{t}"' for t in COMPLIANCE_TOPICS)
    return (
        f'[webhooks]\napi_version = "{api_version}"\n\n'
        f"  [[webhooks.subscriptions]]\n"
        f"  compliance_topics = [{topics}]\n"
        f'  uri = "{address}"\n'
    )


class _Webhooks(_ClientBase):
    """The webhook subscriptions of ShopifyClient."""

    def webhook_subscriptions(self) -> list[dict[str, Any]]:
        """Existing subscriptions as {id, topic, format, callback_url}."""
        out = []
        for node in self._paginate(
            WEBHOOKS_QUERY, "WebhookSubscriptions", "webhookSubscriptions", {"first": 100}, 102
        ):
            endpoint = node.get("endpoint") or {}
            out.append(
                {
                    "id": node["id"],
                    "topic": node["topic"],
                    "format": node.get("format"),
                    "callback_url": endpoint.get("callbackUrl") or node.get("callbackUrl"),
                }
            )
        return out

    def webhook_topics(self) -> frozenset[str]:
        """The `WebhookSubscriptionTopic` values of this client's API version."""
        data = self.execute(WEBHOOK_TOPICS_QUERY, {}, "WebhookTopics", cost=1)
        return frozenset(v["name"] for v in ((data.get("__type") or {}).get("enumValues") or []))

    def plan_webhooks(self, address: str, topics: list[str]) -> dict[str, Any]:
        """What `register_webhooks` would do, changing nothing.

        Returns {"create": [TOPIC], "keep": [TOPIC], "update": [{topic, id, from}],
        "skipped": [TOPIC not in this API version], "compliance": [topic]}. The API lists
        only this app's subscriptions, so one for the topic at another address is ours, moved.
        """
        compliance = [t for t in topics if t in COMPLIANCE_TOPICS]
        wanted = list(dict.fromkeys(webhook_topic(t) for t in topics if t not in compliance))
        known = self.webhook_topics()
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for sub in self.webhook_subscriptions():
            by_topic.setdefault(sub["topic"], []).append(sub)
        plan: dict[str, list[Any]] = {"create": [], "keep": [], "update": [], "skipped": []}
        for topic in wanted:
            subs = by_topic.get(topic) or []
            if topic not in known:
                plan["skipped"].append(topic)
            elif any(s["callback_url"] == address for s in subs):
                plan["keep"].append(topic)
            elif subs:
                old = subs[0]
                plan["update"].append(
                    {"topic": topic, "id": old["id"], "from": old["callback_url"]}
                )
            else:
                plan["create"].append(topic)
        return {**plan, "compliance": compliance}

    def register_webhooks(
        self, address: str, topics: list[str], dry_run: bool = False
    ) -> dict[str, Any]:
        """Subscribe `topics` to `address`, idempotently: a subscription already there is kept,
        one of ours at another address is moved, topics this API version lacks are skipped and
        compliance topics are left to shopify.app.toml (`compliance_toml`).

        Returns the plan (`plan_webhooks`) with "created", "kept", "updated" (topics) and, unless
        `dry_run`, the resulting "subscriptions" at `address`.
        """
        plan = self.plan_webhooks(address, topics)
        result = {
            **plan,
            "created": list(plan["create"]),
            "kept": list(plan["keep"]),
            "updated": [u["topic"] for u in plan["update"]],
        }
        if dry_run:
            return result
        for topic in plan["create"]:
            variables = {
                "topic": topic,
                "webhookSubscription": {"callbackUrl": address, "format": "JSON"},
            }
            data = self.execute(WEBHOOK_CREATE, variables, "WebhookSubscriptionCreate")
            errors = data["webhookSubscriptionCreate"].get("userErrors") or []
            if errors:
                if any("already been taken" in (e.get("message") or "") for e in errors):
                    # created meanwhile by someone else: still idempotent
                    result["created"].remove(topic)
                    result["kept"].append(topic)
                    continue
                raise BadRequest(f"could not subscribe {topic} to {address}: {errors}")
        for move in plan["update"]:
            variables = {"id": move["id"], "webhookSubscription": {"callbackUrl": address}}
            data = self.execute(WEBHOOK_UPDATE, variables, "WebhookSubscriptionUpdate")
            errors = data["webhookSubscriptionUpdate"].get("userErrors") or []
            if errors:
                raise BadRequest(f"could not move {move['topic']} to {address}: {errors}")
        subs = [s for s in self.webhook_subscriptions() if s["callback_url"] == address]
        return {**result, "subscriptions": subs}
