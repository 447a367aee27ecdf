"""Data-quality checks of the analytics tables."""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from crm_pipeline.analytics.segments import VIP_SEGMENT
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.analytics.assets import customer_metrics, customer_segments

#: Below this many buyers, percentile segments are too lumpy to judge their sizes.
MIN_BUYERS_FOR_SIZE_CHECK = 50

_METRICS_VIOLATIONS = """
SELECT
    count(*) FILTER (WHERE total_spent < 0 OR total_refunded < 0 OR net_revenue < 0
                     OR average_order_value < 0 OR items_purchased < 0
                     OR email_opens < 0 OR email_clicks < 0 OR days_since_last_order < 0
                     OR predicted_ltv < 0 OR predicted_purchases_90d < 0) AS negative,
    count(*) FILTER (WHERE net_revenue <> total_spent - total_refunded) AS net_mismatch,
    count(*) FILTER (WHERE lifetime_value <> net_revenue) AS ltv_mismatch,
    count(*) FILTER (WHERE completed_orders + cancelled_orders > total_orders
                     OR returned_orders > completed_orders) AS order_count_mismatch,
    count(*) FILTER (WHERE (completed_orders > 0) <> (last_order_date IS NOT NULL))
        AS date_mismatch,
    count(*) FILTER (WHERE open_rate > 1 OR click_rate > 1) AS rate_over_one,
    count(*) AS rows
FROM customer_metrics
"""


@dg.asset_check(
    asset=customer_metrics,
    blocking=True,
    description="Metrics are non-negative and consistent (net = spent - refunded, LTV = net).",
)
def customer_metrics_non_negative_consistent(postgres: PostgresResource) -> dg.AssetCheckResult:
    """Blocking: segments and the mirror must not be built from impossible numbers."""
    with postgres.get_engine().connect() as conn:
        counts = dict(conn.execute(sa.text(_METRICS_VIOLATIONS)).mappings().one())
    rows = counts.pop("rows")
    return dg.AssetCheckResult(
        passed=not any(counts.values()),
        metadata={"rows": rows, **counts},
    )


@dg.asset_check(
    asset=customer_segments,
    blocking=True,
    description="No customer holds two value segments (or two of any system family).",
)
def customer_segments_single_value_segment(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.get_engine().connect() as conn:
        doubles = conn.execute(
            sa.text(
                "SELECT split_part(segment_name, ':', 1) AS family, count(*) AS customers FROM ("
                "  SELECT customer_id, split_part(segment_name, ':', 1) AS segment_name"
                "  FROM customer_segments"
                "  WHERE segment_name ~ '^(value|engagement|churn_risk|rfm):'"
                "  GROUP BY 1, 2 HAVING count(*) > 1) d GROUP BY 1"
            )
        ).all()
    by_family: dict[str, int] = dict(doubles)
    return dg.AssetCheckResult(
        passed=not by_family,
        metadata={"customers_with_two_segments_by_family": dg.MetadataValue.json(by_family)},
    )


@dg.asset_check(
    asset=customer_segments,
    description="Segment sizes are plausible: percentile segments near their design shares.",
)
def customer_segments_plausible_sizes(postgres: PostgresResource) -> dg.AssetCheckResult:
    """Warns when e.g. everyone became 'value:high' or VIP (a broken input or threshold)."""
    with postgres.get_engine().connect() as conn:
        buyers = conn.execute(
            sa.text(
                "SELECT count(*) FROM customer_metrics m JOIN customers c ON c.id = m.customer_id"
                " WHERE m.completed_orders > 0 AND c.deleted_at IS NULL AND c.merged_into IS NULL"
            )
        ).scalar_one()
        sizes: dict[str, int] = dict(
            conn.execute(
                sa.text(
                    "SELECT segment_name, customers FROM customer_segment_distribution"
                    " WHERE segment_name LIKE 'value:%' OR segment_name = :vip"
                ),
                {"vip": VIP_SEGMENT},
            ).all()
        )
    shares = {k: round(v / buyers, 4) for k, v in sizes.items()} if buyers else {}
    problems = []
    if buyers >= MIN_BUYERS_FOR_SIZE_CHECK:
        if not 0.05 <= shares.get("value:high", 0) <= 0.35:
            problems.append("value:high should hold about 20% of buyers")
        if shares.get("value:low", 0) < 0.25:
            problems.append("value:low should hold about half of buyers")
        if shares.get(VIP_SEGMENT, 0) > 0.10:
            problems.append("vip should hold at most about 5% of buyers")
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "buyers": buyers,
            "shares_of_buyers": dg.MetadataValue.json(shares),
            "problems": ", ".join(problems) or "none",
        },
    )
