"""Order attribution: journeys Shopify built late, Klaviyo's credits, revenue by channel."""

from typing import Any

import dagster as dg
import sqlalchemy as sa

from crm_pipeline.analytics.chart_metadata import revenue_metadata
from crm_pipeline.attribution.journey import journey_row
from crm_pipeline.attribution.store import (
    backfill_missing,
    link_klaviyo,
    pending_journeys,
    summary,
    write_journeys,
)
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.shopify.resources import ShopifyResource

CHECKED_SQL = """
UPDATE order_attributions a SET journey_checked_at = now()
FROM orders o WHERE o.id = a.order_id AND o.source = 'shopify' AND o.external_id = ANY(:ids)
"""


@dg.asset(
    group_name="analytics",
    kinds={"shopify", "postgres"},
    deps=[
        dg.AssetKey("shopify_orders"),
        dg.AssetKey("klaviyo_events"),
        dg.AssetKey("webhook_deliveries"),
    ],
)
def order_attribution(
    context: dg.AssetExecutionContext, shopify: ShopifyResource, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Where each order came from: first/last touch of its Shopify journey and Klaviyo's credit."""
    engine = postgres.get_engine()
    with engine.begin() as conn:
        backfilled = backfill_missing(conn)
        pending = pending_journeys(conn)
    refreshed = 0
    if pending:
        journeys = shopify.get_client().order_journeys(pending)
        with engine.begin() as conn:
            conn.execute(sa.text(CHECKED_SQL), {"ids": pending})
            rows = [(ext, journey_row(raw)) for ext, raw in journeys.items()]
            write_journeys(conn, rows)
        refreshed = sum(1 for _, row in rows if row["journey_status"] != "not_ready")
    with engine.begin() as conn:
        klaviyo_linked = link_klaviyo(conn)
        counts = summary(conn)
    metadata: dict[str, Any] = {
        "journeys_asked_again": len(pending),
        "journeys_now_known": refreshed,
        "orders_backfilled": backfilled,
        "klaviyo_credits_changed": klaviyo_linked,
        **counts,
    }
    context.log.info("attribution: %s", metadata)
    for key, value in revenue_metadata(engine).items():
        if key.endswith("_chart"):
            metadata[key] = dg.MetadataValue.md(value)
        elif isinstance(value, dict):
            metadata[key] = dg.MetadataValue.json(value)
        else:
            metadata[key] = dg.MetadataValue.float(value)
    return dg.MaterializeResult(metadata=metadata)
