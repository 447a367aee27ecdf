"""The BG/NBD fit diagnostic: fit on a calibration period, predict the holdout period's repeat
purchases, and compare with what customers actually bought, averaged by calibration-period
frequency (lifetimes' `calibration_and_holdout_data` + `plot_calibration_purchases_vs_holdout_
purchases`). Run inside a step: it loads pandas and the models."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from crm_pipeline.analytics._db import Bind, as_utc, transaction
from crm_pipeline.analytics.metrics import COMPLETED_ORDER_SQL

MAX_FREQUENCY = 7  # calibration frequencies of 7 and more are one group, as in lifetimes' plot
MIN_HOLDOUT_DAYS, MAX_HOLDOUT_DAYS = 30, 180

_SPAN = (
    f"SELECT min(o.created_at) FROM orders o WHERE o.created_at <= :as_of AND {COMPLETED_ORDER_SQL}"
)
_HOLDOUT = f"""
SELECT o.customer_id::text, count(DISTINCT (o.created_at AT TIME ZONE 'UTC')::date)
FROM orders o
JOIN customers c ON c.id = o.customer_id AND c.deleted_at IS NULL AND c.merged_into IS NULL
WHERE o.created_at > :cal_end AND o.created_at <= :as_of AND {COMPLETED_ORDER_SQL}
GROUP BY 1
"""


def holdout_days(first_order: datetime, as_of: datetime) -> int:
    """A quarter of the observed span, kept between 30 and 180 days."""
    span = (as_of - first_order).days
    return max(MIN_HOLDOUT_DAYS, min(MAX_HOLDOUT_DAYS, span // 4))


def calibration_vs_holdout(bind: Bind, as_of: datetime | None = None) -> dict[str, Any] | None:
    """Per calibration frequency: customers, mean actual and mean predicted holdout purchases;
    None when there are too few buyers to fit (the reason is in the metrics' own metadata)."""
    from crm_pipeline.analytics.predictive import BetaGeoModel, PredictiveModelError
    from crm_pipeline.analytics.scores import rfm_summary

    moment = as_utc(as_of)
    with transaction(bind) as conn:
        first = conn.execute(sa.text(_SPAN), {"as_of": moment}).scalar_one()
        if first is None:
            return None
        days = holdout_days(first, moment)
        cal_end = moment - timedelta(days=days)
        summary = rfm_summary(conn, cal_end)
        actual = dict(
            conn.execute(sa.text(_HOLDOUT), {"cal_end": cal_end, "as_of": moment}).tuples().all()
        )
    if len(summary) < 20 or (summary["frequency"] > 0).sum() < 5:
        return None
    try:
        model = BetaGeoModel().fit(summary["frequency"], summary["recency"], summary["T"])
    except PredictiveModelError:
        return None
    summary["predicted"] = model.conditional_expected_number_of_purchases_up_to_time(
        days, summary["frequency"], summary["recency"], summary["T"]
    )
    summary["actual"] = summary["customer_id"].map(actual).fillna(0).astype(float)
    summary["group"] = summary["frequency"].clip(upper=MAX_FREQUENCY).astype(int)
    grouped = summary.groupby("group").agg(
        customers=("customer_id", "size"),
        actual=("actual", "mean"),
        predicted=("predicted", "mean"),
    )
    return {
        "calibration_end": cal_end.date().isoformat(),
        "holdout_days": days,
        "rows": [
            {
                "frequency": int(f),
                "customers": int(r.customers),
                "actual": round(float(r.actual), 4),
                "predicted": round(float(r.predicted), 4),
            }
            for f, r in grouped.iterrows()
        ],  # fmt: skip
    }
