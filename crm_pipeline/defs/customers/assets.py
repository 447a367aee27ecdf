"""The resolved customer base: one row per person, with the checks that keep it that way."""

import dagster as dg
import sqlalchemy as sa

from crm_pipeline.db.resource import PostgresResource
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


@dg.asset_check(asset=unified_customers, blocking=True)
def unified_customers_unique_live_email(postgres: PostgresResource) -> dg.AssetCheckResult:
    """No two live customers share a normalised email."""
    with postgres.get_engine().connect() as conn:
        dupes = conn.execute(
            sa.text(
                "SELECT email_lowercase, count(*) AS n FROM customers "
                "WHERE deleted_at IS NULL AND email_lowercase IS NOT NULL "
                "GROUP BY email_lowercase HAVING count(*) > 1 LIMIT 20"
            )
        ).all()
    return dg.AssetCheckResult(passed=not dupes, metadata={"duplicate_emails": len(dupes)})


@dg.asset_check(asset=unified_customers)
def unified_customers_no_orphan_sources(postgres: PostgresResource) -> dg.AssetCheckResult:
    """Every live Shopify/manual source record belongs to a live customer (or a merged one)."""
    with postgres.get_engine().connect() as conn:
        orphans = conn.execute(
            sa.text(
                "SELECT s.source, s.external_id FROM customer_sources s "
                "JOIN customers c ON c.id = s.customer_id "
                "WHERE s.deleted_at IS NULL AND s.source IN ('shopify', 'manual') "
                "AND c.deleted_at IS NOT NULL AND c.merged_into IS NULL "
                "AND c.redacted_at IS NULL LIMIT 20"
            )
        ).all()
    return dg.AssetCheckResult(
        passed=not orphans,
        metadata={"orphans": len(orphans), "examples": [f"{s}:{e}" for s, e in orphans]},
    )


@dg.asset_check(asset=unified_customers)
def unified_customers_sources_reconcile(postgres: PostgresResource) -> dg.AssetCheckResult:
    """Every record seen by the last pull is loaded or quarantined (nothing lost in between)."""
    with postgres.get_engine().connect() as conn:
        rows = conn.execute(
            sa.text(
                """
                SELECT st.stream, (st.details ->> 'received')::int AS received,
                       (st.details ->> 'accounted')::int AS accounted
                FROM sync_state st WHERE st.details ? 'received'
                """
            )
        ).all()
    mismatched = [r.stream for r in rows if r.received != r.accounted]
    return dg.AssetCheckResult(
        passed=not mismatched,
        metadata={
            "streams": dg.MetadataValue.json(
                {r.stream: {"received": r.received, "accounted": r.accounted} for r in rows}
            ),
            "mismatched": mismatched,
        },
    )
