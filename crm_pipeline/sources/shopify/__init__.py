"""Shopify Admin GraphQL client: bulk and incremental pulls of customers and orders, webhooks.

Everything is fetched through the official `shopify` SDK's session and GraphQL endpoint and
handed out in the REST resource shape (numeric ids, snake_case, `tags` as "a, b", money as
strings), the shape of `customers.jsonl`/`orders.jsonl` and of Shopify's webhook payloads, so one
mapping downstream serves API pulls, webhooks and files alike.

The package: `queries` (the documents), `convert` (nodes -> REST shape), `transport` (one
call: session, pacing, retries), `paging` (incremental pulls), `bulk` (bulk operations),
`lookups` (point lookups for reconcile), `webhooks` (subscriptions), `base` (what these
mixins use of each other, declared for the type checker), `client` (ShopifyClient, all of
them together).
"""

from __future__ import annotations

from crm_pipeline.sources.shopify.client import DEFAULT_API_VERSION, ShopifyClient
from crm_pipeline.sources.shopify.convert import customer_to_rest, gid_to_id, order_to_rest
from crm_pipeline.sources.shopify.queries import (
    BULK_CUSTOMERS,
    BULK_NODE,
    BULK_ORDERS,
    BULK_RUN,
    CURRENT_BULK,
    CUSTOMER_NODES,
    CUSTOMERS_COUNT,
    CUSTOMERS_QUERY,
    ORDER_LINE_ITEMS_QUERY,
    ORDER_REFUND_LINE_ITEMS_QUERY,
    ORDERS_QUERY,
    WEBHOOK_CREATE,
    WEBHOOK_TOPICS_QUERY,
    WEBHOOK_UPDATE,
    WEBHOOKS_QUERY,
)
from crm_pipeline.sources.shopify.webhooks import COMPLIANCE_TOPICS, compliance_toml, webhook_topic

__all__ = [
    "BULK_CUSTOMERS",
    "BULK_NODE",
    "BULK_ORDERS",
    "BULK_RUN",
    "COMPLIANCE_TOPICS",
    "CURRENT_BULK",
    "CUSTOMER_NODES",
    "CUSTOMERS_COUNT",
    "CUSTOMERS_QUERY",
    "DEFAULT_API_VERSION",
    "ORDERS_QUERY",
    "ORDER_LINE_ITEMS_QUERY",
    "ORDER_REFUND_LINE_ITEMS_QUERY",
    "ShopifyClient",
    "WEBHOOKS_QUERY",
    "WEBHOOK_CREATE",
    "WEBHOOK_TOPICS_QUERY",
    "WEBHOOK_UPDATE",
    "compliance_toml",
    "customer_to_rest",
    "gid_to_id",
    "order_to_rest",
    "webhook_topic",
]
