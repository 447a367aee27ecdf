"""process_webhooks: apply landed deliveries, then refresh what they touched."""

import dagster as dg

from crm_pipeline.defs.webhooks.assets import webhook_deliveries

# Effects reach Postgres and the admin app in the same run: the metrics of the customers the
# deliveries touched (the change log, crm_pipeline.changes), their segments and status, the
# Firestore mirror (incremental by hash) and the dashboard (stats cards, today's history point,
# segment counts, activity feed), so the dashboard is as fresh as the customer documents.
process_webhooks = dg.define_asset_job(
    "process_webhooks",
    selection=dg.AssetSelection.assets(webhook_deliveries)
    | dg.AssetSelection.keys(
        "customer_metrics",
        "customer_segments",
        "firestore_customer_mirror",
        "firestore_dashboard_mirror",
    ),
    description="Apply landed webhook deliveries (Shopify, Klaviyo, admin actions) to the CRM, "
    "then refresh the touched customers' metrics, segments and status, their Firestore "
    "documents and the dashboard documents.",
    executor_def=dg.in_process_executor,  # freshness: no interpreter start per step
)
