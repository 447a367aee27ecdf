"""Predictive scores in customer_metrics: BG/NBD + Gamma-Gamma fitted on the whole customer base.

The RFM summary is built in SQL from completed orders (UTC calendar days, as the predictive
models expect), scored by `crm_pipeline.analytics.predictive`, and written back with one COPY
and one UPDATE. Full runs fit the models on every buyer and store the fit; runs over a few
touched customers score only their RFM rows with the latest stored fit (score_fits.py), so
their cost does not grow with the base. Customers without a completed order get no churn
probability (there is no relationship to churn from), zero predicted purchases and LTV.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from crm_pipeline.analytics._db import Bind, as_utc, transaction
from crm_pipeline.analytics.metrics import COMPLETED_ORDER_SQL
from crm_pipeline.analytics.score_fits import (
    FitPolicy,
    StoredFit,
    latest_fit,
    live_customer_count,
    save_fit,
)
from crm_pipeline.db.copy import copy_rows

log = logging.getLogger(__name__)

SCORE_FIELDS = (
    "churn_probability", "predicted_purchases_90d", "predicted_next_order_date",
    "predicted_ltv", "scoring_method",
)  # fmt: skip

_SUMMARY = f"""
WITH days AS (
    SELECT o.customer_id, (o.created_at AT TIME ZONE 'UTC')::date AS day,
           count(*) AS orders, sum(o.total_price - o.total_refunded) AS value
    FROM orders o
    JOIN customers c ON c.id = o.customer_id AND c.deleted_at IS NULL AND c.merged_into IS NULL
    WHERE o.created_at <= :as_of AND {COMPLETED_ORDER_SQL} /*only_ids*/
    GROUP BY 1, 2
), firsts AS (
    SELECT customer_id, min(day) AS first_day, max(day) AS last_day, count(*) AS n_days,
           sum(orders) AS n_orders
    FROM days GROUP BY customer_id
)
SELECT f.customer_id::text AS customer_id,
       (f.n_days - 1)::float8 AS frequency,
       (f.last_day - f.first_day)::float8 AS recency,
       ((CAST(:as_of AS timestamptz) AT TIME ZONE 'UTC')::date - f.first_day)::float8 AS "T",
       coalesce(avg(d.value) FILTER (WHERE d.day > f.first_day), 0)::float8 AS monetary_value,
       f.n_orders::int AS n_orders
FROM firsts f JOIN days d ON d.customer_id = f.customer_id
GROUP BY f.customer_id, f.first_day, f.last_day, f.n_days, f.n_orders
ORDER BY f.customer_id
"""
_SUMMARY_ALL = _SUMMARY
# the touched customers' rows only (orders_customer_created_idx): no scan of every order
_SUMMARY_OF_IDS = _SUMMARY.replace("/*only_ids*/", "AND o.customer_id = ANY(CAST(:ids AS uuid[]))")

_KLAVIYO = """
SELECT c.id::text AS customer_id,
       c.custom_attributes #>> '{klaviyo,predictive_analytics,churn_probability}' AS k_churn,
       c.custom_attributes #>> '{klaviyo,predictive_analytics,predicted_clv}' AS k_clv,
       c.custom_attributes #>> '{klaviyo,predictive_analytics,expected_date_of_next_order}'
           AS k_next
FROM customers c
WHERE c.deleted_at IS NULL AND c.merged_into IS NULL
  AND c.custom_attributes #> '{klaviyo,predictive_analytics}' IS NOT NULL
"""

_UPDATE = """
UPDATE customer_metrics m SET
    churn_probability = s.churn_probability,
    predicted_purchases_90d = s.predicted_purchases_90d,
    predicted_next_order_date = s.predicted_next_order_date,
    predicted_ltv = s.predicted_ltv,
    scoring_method = s.scoring_method
FROM _scores s
WHERE m.customer_id = s.customer_id
  AND (m.churn_probability, m.predicted_purchases_90d, m.predicted_next_order_date,
       m.predicted_ltv, m.scoring_method)
      IS DISTINCT FROM
      (s.churn_probability, s.predicted_purchases_90d, s.predicted_next_order_date,
       s.predicted_ltv, s.scoring_method)
"""


def rfm_summary(
    bind: Bind, as_of: datetime | None = None, customer_ids: list[str] | None = None
) -> pd.DataFrame:
    """One row per live customer with a completed order: frequency, recency, T (days), value.

    `customer_ids` restricts it to those customers (their rows are the same as in the full one).
    """
    params: dict[str, Any] = {"as_of": as_utc(as_of)}
    sql = _SUMMARY_ALL
    if customer_ids is not None:
        sql, params["ids"] = _SUMMARY_OF_IDS, list(customer_ids)
    with transaction(bind) as conn:
        rows = conn.execute(sa.text(sql), params).all()
    columns = ["customer_id", "frequency", "recency", "T", "monetary_value", "n_orders"]
    return pd.DataFrame(rows, columns=columns)


def score_population(
    bind: Bind, as_of: datetime | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit on every buyer and return their scores plus the model metadata."""
    from crm_pipeline.analytics.predictive import score_customers

    moment = as_utc(as_of)
    summary = rfm_summary(bind, moment)
    scores, meta = score_customers(summary, moment.date())
    return scores, meta


def score_with_stored_fit(
    bind: Bind,
    as_of: datetime | None = None,
    customer_ids: list[str] | None = None,
    policy: FitPolicy | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Scores of `customer_ids` with the latest stored fit, or of everyone with a new fit.

    A new fit is made (and stored) when `customer_ids` is None (a full run), or when no stored
    fit is usable for a run at `as_of` under `policy`; it is fitted on every buyer either way.
    The metadata says which (`fit`: "fitted" or "reused", `fit_id`, `fit_age_days`).
    """
    from crm_pipeline.analytics.predictive import apply_scoring_fit, fit_scoring_model

    moment = as_utc(as_of)
    policy = policy or FitPolicy.from_env()
    live = live_customer_count(bind)
    reason = "full recompute"
    if customer_ids is not None:
        stored = latest_fit(bind)
        reason = "no stored fit" if stored is None else stored.stale_reason(moment, live, policy)
        if stored is not None and reason is None:
            summary = rfm_summary(bind, moment, customer_ids)
            scores, meta = apply_scoring_fit(stored.fit, summary, moment.date())
            return scores, {**meta, **_fit_meta(stored, moment, "reused")}
    summary = rfm_summary(bind, moment)
    fit = fit_scoring_model(summary, moment.date())
    stored = save_fit(bind, fit, moment, live)
    scores, meta = apply_scoring_fit(fit, summary, moment.date())
    log.info("scores: fitted %s on %d buyers (%s)", fit.method, len(summary), reason)
    return scores, {**meta, **_fit_meta(stored, moment, "fitted"), "fit_reason": reason}


def _fit_meta(stored: StoredFit, as_of: datetime, how: str) -> dict[str, Any]:
    return {
        "fit": how,
        "fit_id": stored.fit_id,
        "fit_as_of": stored.as_of.isoformat(),
        "fit_age_days": round(stored.age(as_of).total_seconds() / 86400, 3),
    }


def write_scores(
    bind: Bind,
    as_of: datetime | None = None,
    customer_ids: list[str] | None = None,
    policy: FitPolicy | None = None,
) -> dict[str, Any]:
    """Score and write the scores of `customer_ids` (None: fit anew, write every metrics row).

    `customer_ids` are scored with the latest stored fit (see `score_with_stored_fit`).
    Returns the model metadata plus, on full runs, agreement with Klaviyo's own predictions.
    """
    moment = as_utc(as_of)
    with transaction(bind) as conn:
        scores, meta = score_with_stored_fit(conn, moment, customer_ids, policy)
        if customer_ids is None:
            targets = [
                str(r[0]) for r in conn.execute(sa.text("SELECT customer_id FROM customer_metrics"))
            ]
        else:
            targets = list(dict.fromkeys(customer_ids))
        rows = _score_rows(targets, scores)
        conn.execute(
            sa.text(
                "CREATE TEMP TABLE IF NOT EXISTS _scores (customer_id uuid PRIMARY KEY, "
                "churn_probability numeric(6, 4), predicted_purchases_90d numeric(10, 4), "
                "predicted_next_order_date date, predicted_ltv numeric(14, 2), "
                "scoring_method text)"
            )
        )
        conn.execute(sa.text("TRUNCATE _scores"))
        copy_rows(conn, "_scores", ["customer_id", *SCORE_FIELDS], rows)
        updated = conn.execute(sa.text(_UPDATE)).rowcount
        # a comparison over a few touched customers says nothing: full runs only
        klaviyo = klaviyo_agreement(conn, scores) if customer_ids is None else {}
    meta = {**meta, "scored_customers": len(scores), "written_customers": updated}
    meta["klaviyo_agreement"] = klaviyo
    log.info("scores: method=%s fit=%s written=%d", meta.get("method"), meta.get("fit"), updated)
    return meta


def _score_rows(targets: list[str], scores: pd.DataFrame) -> list[tuple]:
    """Rows for COPY: the model's scores, or 'no orders' values for non-buyers."""
    by_id = scores.set_index("customer_id")
    rows: list[tuple] = []
    known = by_id.index
    present = pd.Index(targets).isin(known)
    sub = by_id.reindex([t for t, p in zip(targets, present, strict=True) if p])
    for cid, churn, purchases, next_date, ltv, method in zip(
        sub.index,
        sub["churn_probability"].tolist(),
        sub["predicted_purchases_90d"].tolist(),
        sub["predicted_next_order_date"].tolist(),
        sub["predicted_ltv"].tolist(),
        sub["scoring_method"].tolist(),
        strict=True,
    ):
        next_value = None if next_date is None or pd.isna(next_date) else next_date
        rows.append((cid, _finite(churn), _finite(purchases), next_value, _finite(ltv), method))
    for cid, is_scored in zip(targets, present, strict=True):
        if not is_scored:
            rows.append((cid, None, 0.0, None, 0.0, None))
    return rows


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _to_float(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def klaviyo_agreement(bind: Bind, scores: pd.DataFrame) -> dict[str, Any]:
    """How our scores compare with Klaviyo's predictive_analytics where Klaviyo has them."""
    from scipy.stats import spearmanr

    with transaction(bind) as conn:
        theirs = pd.DataFrame(
            conn.execute(sa.text(_KLAVIYO)).all(),
            columns=["customer_id", "k_churn", "k_clv", "k_next"],
        )
    joined = scores.merge(theirs, on="customer_id", how="inner")
    result: dict[str, Any] = {"customers_compared": int(len(joined))}

    def spearman(a: pd.Series, b: pd.Series) -> float | None:
        ok = a.notna() & b.notna()
        if ok.sum() < 3 or a[ok].nunique() < 2 or b[ok].nunique() < 2:
            return None
        rho = spearmanr(a[ok], b[ok]).statistic
        return None if not np.isfinite(rho) else round(float(rho), 4)

    if len(joined):
        ours_churn = _to_float(joined["churn_probability"])
        k_churn = _to_float(joined["k_churn"])
        ours_ltv = _to_float(joined["predicted_ltv"])
        k_clv = _to_float(joined["k_clv"])
        result["churn_spearman"] = spearman(ours_churn, k_churn)
        diff = (ours_churn - k_churn).abs().dropna()
        result["churn_mean_abs_diff"] = round(float(diff.mean()), 4) if len(diff) else None
        result["ltv_spearman"] = spearman(ours_ltv, k_clv)
        ours_next = pd.to_datetime(joined["predicted_next_order_date"], errors="coerce")
        k_next = pd.to_datetime(joined["k_next"], errors="coerce", utc=True).dt.tz_localize(None)
        days = (ours_next - k_next.dt.normalize()).dt.days.abs().dropna()
        result["next_order_mean_abs_diff_days"] = (
            round(float(days.mean()), 1) if len(days) else None
        )
    return result
