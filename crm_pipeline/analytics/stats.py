"""Dashboard numbers: the customer_stats view and the segment distribution, read for metadata."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from crm_pipeline.analytics._db import Bind, transaction

STAT_FIELDS = (
    "total_customers", "active_customers", "vip_customers", "average_ltv", "churn_rate",
    "new_this_month", "high_risk_customers", "growth_rate",
)  # fmt: skip


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return value


def read_stats(bind: Bind) -> dict[str, Any]:
    """The one row of customer_stats as plain Python numbers (None where undefined)."""
    with transaction(bind) as conn:
        row = conn.execute(sa.text("SELECT * FROM customer_stats")).mappings().one()
    return {k: _plain(row[k]) for k in STAT_FIELDS}


def segment_distribution(bind: Bind) -> list[dict[str, Any]]:
    """Live customers per segment, largest family first then by name."""
    with transaction(bind) as conn:
        rows = conn.execute(
            sa.text(
                "SELECT segment_family, segment_name, segment_type, customers, share_of_customers "
                "FROM customer_segment_distribution ORDER BY segment_family, segment_name"
            )
        ).mappings()
        return [{k: _plain(v) for k, v in r.items()} for r in rows]


def stats_markdown(stats: dict[str, Any], distribution: list[dict[str, Any]]) -> str:
    """The snapshot as markdown tables for the Dagster UI."""

    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.4f}".rstrip("0").rstrip(".")
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = ["| stat | value |", "|---|---|"]
    lines += [f"| {k} | {fmt(stats.get(k))} |" for k in STAT_FIELDS]
    if distribution:
        lines += ["", "| segment | customers | share |", "|---|---|---|"]
        lines += [
            f"| {d['segment_name']} | {fmt(d['customers'])} | {fmt(d['share_of_customers'])} |"
            for d in distribution
        ]
    return "\n".join(lines)
