"""The processing of landed webhook deliveries, as an asset so each run's numbers are kept."""

from typing import Any

import dagster as dg

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.webhooks import process_pending, queue_stats


class WebhookProcessingConfig(dg.Config):
    """How much one run takes on; the sensor starts the next run for whatever is left."""

    batch_size: int = 100
    max_deliveries: int = 50_000


@dg.asset(group_name="webhooks", kinds={"postgres"})
def webhook_deliveries(
    context: dg.AssetExecutionContext, config: WebhookProcessingConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Shopify, Klaviyo and admin-app webhook deliveries applied to the CRM, each once in effect.

    Touched customers get their updated_at bumped, which is how customer metrics and the
    Firestore mirror find what to recompute.
    """
    engine = postgres.get_engine()
    report = process_pending(
        engine,
        run_id=context.run_id,
        batch_size=config.batch_size,
        max_deliveries=config.max_deliveries,
    )
    for error in report.errors:
        context.log.warning("webhook delivery failed: %s", error)
    stats = queue_stats(engine)
    context.log.info(
        "processed %d deliveries (%s); %d failed, %d dead; %d customers touched",
        report.processed,
        dict(report.outcomes),
        report.retry_scheduled,
        report.dead,
        len(report.touched_customer_ids),
    )
    metadata: dict[str, Any] = {
        **report.as_metadata(),
        "queue_pending": stats.pending,
        "queue_failed": stats.failed,
        "queue_dead": stats.dead,
        "oldest_pending_age_seconds": stats.oldest_pending_age_seconds or 0.0,
        "touched_customer_sample": dg.MetadataValue.json(sorted(report.touched_customer_ids)[:50]),
        "errors": dg.MetadataValue.json(report.errors),
    }
    return dg.MaterializeResult(metadata=metadata)
