"""Shopify customers and orders: pulled through the Admin GraphQL API, validated, merged."""

from datetime import UTC, datetime

import dagster as dg

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.common import (
    PullConfig,
    load_metadata,
    quarantine_check,
    quarantine_check_spec,
)
from crm_pipeline.defs.shopify.resources import ShopifyResource
from crm_pipeline.ingest.cursors import HighWaterMark, SyncCursor
from crm_pipeline.ingest.customers import CustomerLoader, ReconcileRefused, reconcile_deletions
from crm_pipeline.ingest.orders import OrderLoader, link_orphan_orders
from crm_pipeline.mapping.shopify import map_customer, map_order
from crm_pipeline.sources.errors import SourceError


@dg.asset(
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
    engine = postgres.get_engine()
    client = shopify.get_client()
    cursor = SyncCursor(engine, "shopify.customers")
    since = None if config.full_refresh else cursor.since()
    mark = HighWaterMark(datetime.now(UTC))
    full = since is None
    loader = CustomerLoader(
        engine,
        origin="api pull",
        origin_detail="shopify.customers",
        run_id=context.run_id,
        reconcile_run_id=context.run_id if full else None,
    )
    try:
        raw = client.bulk_customers() if full else client.customers_updated_since(since)
        report = loader.load(mark.track(map_customer(c) for c in raw))
        reconcile = reconcile_deletions(engine, "shopify", context.run_id) if full else {}
    except (SourceError, ReconcileRefused) as exc:
        raise dg.Failure(description=f"Shopify customer pull failed: {exc}") from exc
    cursor.advance(
        mark.value,
        {
            "run_id": context.run_id,
            "mode": "full" if full else "incremental",
            "received": report.received,
            "accounted": report.accounted,
        },
    )
    context.log.info("shopify customers: %s", report.as_metadata())
    return dg.MaterializeResult(
        metadata=load_metadata(
            report,
            mode="full" if full else "incremental",
            pulled_since=str(since) if since else "beginning",
            cursor=str(mark.value),
            **{f"reconcile_{k}": v for k, v in reconcile.items()},
        ),
        check_results=[quarantine_check(report, config.max_quarantine_rate)],
    )


@dg.asset(
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
    engine = postgres.get_engine()
    client = shopify.get_client()
    cursor = SyncCursor(engine, "shopify.orders")
    since = None if config.full_refresh else cursor.since()
    mark = HighWaterMark(datetime.now(UTC))
    loader = OrderLoader(
        engine, origin="api pull", origin_detail="shopify.orders", run_id=context.run_id
    )
    try:
        raw = client.bulk_orders() if since is None else client.orders_updated_since(since)
        report = loader.load(mark.track(map_order(o) for o in raw))
    except SourceError as exc:
        raise dg.Failure(description=f"Shopify order pull failed: {exc}") from exc
    linked = link_orphan_orders(engine)
    cursor.advance(
        mark.value,
        {"run_id": context.run_id, "received": report.received, "accounted": report.accounted},
    )
    return dg.MaterializeResult(
        metadata=load_metadata(
            report,
            mode="full" if since is None else "incremental",
            late_linked_orders=linked,
            cursor=str(mark.value),
        ),
        check_results=[quarantine_check(report, config.max_quarantine_rate)],
    )
