"""The checks that keep the customer base one row per person, with nothing lost on the way."""

import dagster as dg
import sqlalchemy as sa

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.customers.assets import unified_customers


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
