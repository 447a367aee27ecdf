"""Webhook subscriptions: list, create and update, with Shopify's user errors.

The topic arrives already checked against the version's `WebhookSubscriptionTopic` enum by
graphql-core, so a topic the API does not know never gets this far.
"""

from __future__ import annotations

import time
from typing import Any

from crm_pipeline.sandbox.shopify.nodes import gid
from crm_pipeline.sandbox.shopify.paging import list_connection


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _node(sub: dict) -> dict:
    return {
        **sub,
        "__typename": "WebhookSubscription",
        "endpoint": {"__typename": "WebhookHttpEndpoint", "callbackUrl": sub["callbackUrl"]},
    }


def _address_error(url: str) -> dict | None:
    if url.startswith(("http://", "https://")):
        return None
    return {"field": ["webhookSubscription", "callbackUrl"], "message": "Address is invalid"}


def _taken(shop: Any, topic: str, url: str, other_than: str | None = None) -> dict | None:
    for sub in shop.webhooks.values():
        if sub["topic"] == topic and sub["callbackUrl"] == url and sub["id"] != other_than:
            return {
                "field": ["webhookSubscription", "callbackUrl"],
                "message": "Address for this topic has already been taken",
            }
    return None


def subscriptions(shop: Any, args: dict[str, Any]) -> dict:
    """`webhookSubscriptions(first, after, topics, callbackUrl, format)`."""
    with shop.lock:
        subs = list(shop.webhooks.values())
    topics = args.get("topics")
    if topics:
        subs = [s for s in subs if s["topic"] in topics]
    for key in ("callbackUrl", "format"):
        if args.get(key):
            subs = [s for s in subs if s[key] == args[key]]
    return list_connection([_node(s) for s in subs], args)


def find(shop: Any, ident: str) -> dict | None:
    sub = shop.webhooks.get(ident)
    return _node(sub) if sub else None


def create(shop: Any, topic: str, sub_in: dict) -> dict:
    """`webhookSubscriptionCreate(topic, webhookSubscription)`."""
    url = sub_in.get("callbackUrl") or ""
    with shop.lock:
        errors = [e for e in (_address_error(url), _taken(shop, topic, url)) if e]
        if errors:
            return {"webhookSubscription": None, "userErrors": errors}
        shop.webhook_seq += 1
        sub = {
            "id": gid("WebhookSubscription", 9000 + shop.webhook_seq),
            "topic": topic,
            "format": sub_in.get("format") or "JSON",
            "callbackUrl": url,
            "includeFields": sub_in.get("includeFields") or [],
            "metafieldNamespaces": sub_in.get("metafieldNamespaces") or [],
            "filter": sub_in.get("filter"),
            "createdAt": _now(),
            "updatedAt": _now(),
        }
        shop.webhooks[sub["id"]] = sub
    return {"webhookSubscription": _node(sub), "userErrors": []}


def update(shop: Any, ident: str, sub_in: dict) -> dict:
    """`webhookSubscriptionUpdate(id, webhookSubscription)`: the fields given are replaced."""
    with shop.lock:
        sub = shop.webhooks.get(ident)
        if sub is None:
            error = {"field": ["id"], "message": "Webhook subscription does not exist"}
            return {"webhookSubscription": None, "userErrors": [error]}
        url = sub_in.get("callbackUrl") or sub["callbackUrl"]
        errors = [e for e in (_address_error(url), _taken(shop, sub["topic"], url, ident)) if e]
        if errors:
            return {"webhookSubscription": None, "userErrors": errors}
        changes = {k: v for k, v in sub_in.items() if v is not None}
        sub.update(changes, callbackUrl=url, updatedAt=_now())
    return {"webhookSubscription": _node(sub), "userErrors": []}
