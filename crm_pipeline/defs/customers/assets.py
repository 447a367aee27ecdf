"""The resolved customer base: one row per person across every source."""

import dagster as dg
import sqlalchemy as sa

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.pipeline.executor import CPU_BOUND
from crm_pipeline.ingest.orders import link_orphan_orders

IDENTITY_SQL = """
SELECT
    count(*) FILTER (WHERE c.deleted_at IS NULL AND c.merged_into IS NULL) AS live_customers,
    count(*) FILTER (WHERE c.deleted_at IS NOT NULL) AS deleted_customers,
    count(*) FILTER (WHERE c.redacted_at IS NOT NULL) AS redacted_customers,
    count(*) FILTER (WHERE c.deleted_at IS NULL AND s.n > 1) AS multi_source_customers,
    count(*) FILTER (WHERE c.deleted_at IS NULL AND c.email_lowercase IS NULL) AS without_email
FROM customers c
LEFT JOIN LATERAL (SELECT count(*) AS n FROM customer_sources s
                   WHERE s.customer_id = c.id AND s.deleted_at IS NULL) s ON true
"""


@dg.asset(
    op_tags=CPU_BOUND,
    group_name="identity",
    kinds={"postgres"},
    deps=["shopify_customers", "klaviyo_profiles", "shopify_orders"],
)
def unified_customers(postgres: PostgresResource) -> dg.MaterializeResult:
    """One customer per person across Shopify, Klaviyo and imports (identity resolution)."""
    engine = postgres.get_engine()
    linked = link_orphan_orders(engine)
    with engine.connect() as conn:
        stats = conn.execute(sa.text(IDENTITY_SQL)).mappings().one()
        by_source: dict[str, int] = dict(
            conn.execute(
                sa.text(
                    "SELECT source, count(*) FROM customer_sources WHERE deleted_at IS NULL "
                    "GROUP BY source ORDER BY source"
                )
            ).all()
        )
    return dg.MaterializeResult(
        metadata={
            **{k: int(v) for k, v in stats.items()},
            "late_linked_orders": linked,
            "live_sources_by_source": dg.MetadataValue.json(by_source),
        }
    )
