"""What the analytics assets put in their metadata besides numbers: the data behind each chart,
read from the database, and the chart as Markdown (crm_pipeline/analytics/charts.py). Numbers
stay numbers in the returned dicts so Dagster's own plots over time keep working."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from crm_pipeline.analytics import charts
from crm_pipeline.analytics._db import Bind, transaction

REVENUE_MONTHS = 24

_REVENUE = """
SELECT period_start, channel, net_revenue FROM revenue_by_channel
WHERE model = :model AND grain = 'month'
  AND period_start >= (date_trunc('month', now()) - make_interval(months => :months))::date
  AND period_start <= now()::date
"""
_REVENUE_TOTALS = """
SELECT model, channel, sum(net_revenue), sum(orders) FROM revenue_by_channel
WHERE grain = 'month' GROUP BY model, channel ORDER BY model, channel
"""
_ACQUISITION = """
SELECT acquisition_channel, count(*), avg(lifetime_value), avg(predicted_ltv)
FROM customer_acquisition GROUP BY 1 ORDER BY 3 DESC NULLS LAST
"""
_SCORES = """
SELECT m.churn_probability, m.predicted_ltv FROM customer_metrics m
JOIN customers c ON c.id = m.customer_id AND c.deleted_at IS NULL AND c.merged_into IS NULL
WHERE m.total_orders > 0
"""


def revenue_metadata(bind: Bind) -> dict[str, Any]:
    """Net revenue per channel (all time, first/last touch and Klaviyo) and the monthly chart."""
    out: dict[str, Any] = {}
    with transaction(bind) as conn:
        series: dict[str, dict[date, float]] = defaultdict(dict)
        for period, channel, net in conn.execute(
            sa.text(_REVENUE), {"model": "last_touch", "months": REVENUE_MONTHS}
        ):
            series[channel][period] = float(net or 0)
        totals = conn.execute(sa.text(_REVENUE_TOTALS)).all()
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for model, channel, net, orders in totals:
        table[model][channel] = {"net_revenue": float(net or 0), "orders": int(orders)}
        if model == "last_touch":
            out[f"net_revenue_last_touch_{channel}"] = float(net or 0)
    out["revenue_by_channel"] = dict(table)
    out["revenue_by_channel_chart"] = charts.markdown(
        "Net revenue by channel (last touch)",
        charts.stacked_over_time("Net revenue by last-touch channel, per month", series),
    )
    return out


def acquisition_metadata(bind: Bind) -> dict[str, Any]:
    """Average LTV and predicted LTV of customers per acquisition (first-touch) channel."""
    with transaction(bind) as conn:
        rows = conn.execute(sa.text(_ACQUISITION)).all()
    labels = [r[0] for r in rows]
    ltv = [float(r[2] or 0) for r in rows]
    predicted = [float(r[3] or 0) for r in rows]
    return {
        "ltv_by_acquisition_channel": {
            r[0]: {
                "customers": int(r[1]),
                "average_ltv": round(float(r[2] or 0), 2),
                "average_predicted_ltv": round(float(r[3] or 0), 2),
            }
            for r in rows
        },  # fmt: skip
        "ltv_by_acquisition_channel_chart": charts.markdown(
            "LTV by acquisition channel",
            charts.grouped_bars(
                "Average LTV by acquisition channel (first touch of the first order)",
                labels,
                {"LTV to date": ltv, "predicted LTV": predicted},
                "per customer",
            ),
        ),
    }


def score_metadata(bind: Bind, distribution: dict[str, int]) -> dict[str, Any]:
    """Segment sizes and the distributions of churn probability and predicted LTV."""
    with transaction(bind) as conn:
        rows = conn.execute(sa.text(_SCORES)).all()
    churn = [float(r[0]) for r in rows if r[0] is not None]
    ltv = [float(r[1]) for r in rows if r[1] is not None]
    cap = sorted(ltv)[int(len(ltv) * 0.99) - 1] if len(ltv) >= 100 else None
    return {
        "segment_distribution_chart": charts.markdown(
            "Customers per segment",
            charts.bars("Customers per segment", distribution, "customers", horizontal=True),
        ),
        "churn_probability_histogram": charts.markdown(
            "Churn probability",
            charts.histogram("Churn probability of customers with orders", churn, "P(churned)"),
        ),
        "predicted_ltv_histogram": charts.markdown(
            "Predicted LTV",
            charts.histogram(
                "Predicted LTV of customers with orders (top 1% cut off)"
                if cap
                else "Predicted LTV of customers with orders",
                [v for v in ltv if cap is None or v <= cap],
                "predicted LTV",
            ),
        ),  # fmt: skip
    }


def calibration_metadata(bind: Bind, as_of: datetime) -> dict[str, Any]:
    """The BG/NBD calibration/holdout table and chart; a note when the base is too small."""
    from crm_pipeline.analytics.calibration import calibration_vs_holdout

    result = calibration_vs_holdout(bind, as_of)
    if result is None:
        return {"calibration_note": "too few repeat buyers to fit a calibration period"}
    rows = result["rows"]
    return {
        "calibration_holdout": result,
        "calibration_chart": charts.markdown(
            "BG/NBD calibration",
            charts.calibration(
                f"BG/NBD: predicted vs actual purchases in the {result['holdout_days']}-day "
                f"holdout after {result['calibration_end']}",
                [r["frequency"] for r in rows],
                [r["actual"] for r in rows],
                [r["predicted"] for r in rows],
            ),
        ),
    }
