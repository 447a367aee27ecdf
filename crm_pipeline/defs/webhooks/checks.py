"""Data-quality checks of webhook processing."""

import dagster as dg
import sqlalchemy as sa

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.webhooks.assets import webhook_deliveries
from crm_pipeline.pii import mask_optional


@dg.asset_check(asset=webhook_deliveries, description="No webhook delivery is dead-lettered.")
def webhook_deliveries_no_dead_letters(postgres: PostgresResource) -> dg.AssetCheckResult:
    """Dead letters need a person: fix the cause, then `crm-pipeline webhooks replay --dead`."""
    with postgres.get_engine().connect() as conn:
        by_topic: dict[str, int] = dict(
            conn.execute(
                sa.text(
                    "SELECT source || ' ' || topic, count(*) FROM webhook_events "
                    "WHERE status = 'dead' GROUP BY 1 ORDER BY 2 DESC"
                )
            ).all()
        )
        recent = [
            {
                "id": r.id,
                "topic": r.topic,
                "attempts": r.attempts,
                "error": mask_optional(r.last_error),
            }
            for r in conn.execute(
                sa.text(
                    "SELECT id, topic, attempts, left(last_error, 300) AS last_error "
                    "FROM webhook_events WHERE status = 'dead' ORDER BY id DESC LIMIT 10"
                )
            )
        ]
    dead = sum(by_topic.values())
    return dg.AssetCheckResult(
        passed=dead == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "dead_letters": dead,
            "dead_by_topic": dg.MetadataValue.json(by_topic),
            "latest_dead": dg.MetadataValue.json(recent),
        },
    )
