"""Shopify customers and orders: pulled through the Admin GraphQL API, validated, merged."""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import dagster as dg

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.common import Pull, PullConfig, quarantine_check_spec, run_pull
from crm_pipeline.defs.pipeline.executor import API_BOUND
from crm_pipeline.defs.shopify.resources import ShopifyResource
from crm_pipeline.ingest.bad_records import mapped
from crm_pipeline.ingest.customers import CustomerLoader
from crm_pipeline.ingest.orders import OrderLoader, link_orphan_orders
from crm_pipeline.ingest.workers import decode_in_workers
from crm_pipeline.mapping.shopify import map_bulk_customer_line, map_customer, map_order
from crm_pipeline.sources.shopify import ShopifyClient


def customers_pull(client: ShopifyClient) -> Pull:
    """The Shopify customers stream: full pulls through one bulk operation whose JSONL lines
    are decoded and mapped in worker processes (ingest/workers.py), checked complete against
    the shop's count and reconciled with `nodes(ids:)` lookups; incremental pulls through
    paginated updated_at queries, mapped here."""

    def fetch(since: datetime | None) -> Iterable[Any]:
        if since is None:
            return decode_in_workers(
                client.bulk_customer_lines(), map_bulk_customer_line, source="shopify"
            )
        return mapped(client.customers_updated_since(since), map_customer, "shopify")

    return Pull(
        stream="shopify.customers",
        fetch=fetch,
        map=None,
        loader=CustomerLoader,
        reconcile_source="shopify",
        still_alive=client.customers_alive,
        incomplete=client.bulk_customers_incomplete,
    )


@dg.asset(
    op_tags=API_BOUND,
    group_name="ingestion",
    kinds={"shopify", "postgres"},
    check_specs=[quarantine_check_spec("shopify_customers")],
)
def shopify_customers(
    context: dg.AssetExecutionContext,
    config: PullConfig,
    shopify: ShopifyResource,
    postgres: PostgresResource,
) -> dg.MaterializeResult:
    """Every Shopify customer with addresses, resolved into one customer per person."""
    client = shopify.get_client()
    engine = postgres.get_engine()
    return run_pull(context, config, engine, customers_pull(client), usage=client.usage)


@dg.asset(
    op_tags=API_BOUND,
    group_name="ingestion",
    kinds={"shopify", "postgres"},
    deps=[shopify_customers],
    check_specs=[quarantine_check_spec("shopify_orders")],
)
def shopify_orders(
    context: dg.AssetExecutionContext,
    config: PullConfig,
    shopify: ShopifyResource,
    postgres: PostgresResource,
) -> dg.MaterializeResult:
    """Shopify orders with line items and refunds, linked to their customers."""
    client = shopify.get_client()
    pull = Pull(
        stream="shopify.orders",
        fetch=lambda since: (
            client.bulk_orders() if since is None else client.orders_updated_since(since)
        ),
        map=map_order,
        loader=OrderLoader,
    )
    return run_pull(
        context,
        config,
        postgres.get_engine(),
        pull,
        after_load=lambda engine: {"late_linked_orders": link_orphan_orders(engine)},
        usage=client.usage,
    )
