"""`score_customers`, the pipeline's entry point: fit on the base, fall back to the heuristics
of docs/predictive.md on small or degenerate bases, never raise on odd data. Moved from
crm_pipeline/predictive.py.
"""

from __future__ import annotations

import logging
import time as _time
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np
import pandas as pd

from crm_pipeline.analytics.predictive.fitting import (
    InvalidSummaryError,
    PredictiveModelError,
    _compress,
)
from crm_pipeline.analytics.predictive.models import (
    BetaGeoModel,
    GammaGammaModel,
    ModifiedBetaGeoModel,
    _discounted_monthly_purchases,
)

logger = logging.getLogger(__name__)

#: Fewer repeat buyers than this and the (M)BG/NBD parameters are noise; use the heuristics.
MIN_REPEAT_CUSTOMERS = 20
#: Heuristic P(alive) halves roughly every two typical gaps of silence (e-folding at 3 gaps).
HEURISTIC_SILENCE_GAPS = 3.0
#: Assumed gap between orders when nobody in the base has ordered twice.
HEURISTIC_DEFAULT_GAP_DAYS = 365.0
#: A next-order date further out than this is reported as unknown (null).
NEXT_ORDER_MAX_DAYS = 3 * 365
#: Month length used for LTV, as in `lifetimes.customer_lifetime_value(freq="D")`.
DAYS_PER_MONTH = 30.0
#: Beyond this share of customers the model's closed forms cannot evaluate, distrust the fit.
MAX_UNSCORABLE_SHARE = 0.01
#: Probability threshold that defines predicted_next_order_date.
NEXT_ORDER_PROBABILITY = 0.5


# --------------------------------------------------------------------------------------------
# pipeline scoring

RFM_COLUMNS = ["frequency", "recency", "T", "monetary_value"]
# Inputs beyond this are data errors (a trillion days or dollars); keeps products finite.
_MAX_INPUT_VALUE = 1e12
SCORE_COLUMNS = [
    "customer_id",
    "churn_probability",
    "predicted_purchases_90d",
    "predicted_next_order_date",
    "predicted_ltv",
    "scoring_method",
]


ModelName = Literal["mbg_nbd", "bg_nbd"]
#: Purchase models `score_customers` can fit, by the name used in metadata and scoring_method.
PURCHASE_MODELS: dict[str, tuple[type[BetaGeoModel], str]] = {
    "mbg_nbd": (ModifiedBetaGeoModel, "MBG/NBD"),
    "bg_nbd": (BetaGeoModel, "BG/NBD"),
}


@dataclass(frozen=True)
class ScoringFit:
    """Everything `apply_scoring_fit` needs to score any customer without the population: the
    fitted purchase and spend parameters, the heuristics' pooled statistics, and the settings.

    `as_dict`/`from_dict` round-trip it through JSON (the predictive_model_fits table).
    """

    model: str
    method: str  # the purchase model's name, or "heuristic"
    params: dict[str, float]
    spend_method: str  # "gamma_gamma" or "heuristic"
    spend_params: dict[str, float]
    pooled_gap: float
    #: mean repeat order value of the fit's base: the spend prior for customers the spend
    #: model cannot score
    population_mean_spend: float
    horizon_days: int
    ltv_months: int
    monthly_discount_rate: float
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "method": self.method,
            "params": self.params,
            "spend_method": self.spend_method,
            "spend_params": self.spend_params,
            "pooled_gap": self.pooled_gap,
            "population_mean_spend": self.population_mean_spend,
            "horizon_days": self.horizon_days,
            "ltv_months": self.ltv_months,
            "monthly_discount_rate": self.monthly_discount_rate,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoringFit:
        return cls(
            model=str(data["model"]),
            method=str(data["method"]),
            params={k: float(v) for k, v in data["params"].items()},
            spend_method=str(data["spend_method"]),
            spend_params={k: float(v) for k, v in data["spend_params"].items()},
            pooled_gap=float(data["pooled_gap"]),
            population_mean_spend=float(data["population_mean_spend"]),
            horizon_days=int(data["horizon_days"]),
            ltv_months=int(data["ltv_months"]),
            monthly_discount_rate=float(data["monthly_discount_rate"]),
            metadata=dict(data.get("metadata") or {}),
        )


def score_customers(
    summary: pd.DataFrame,
    as_of: date,
    horizon_days: int = 90,
    ltv_months: int = 12,
    monthly_discount_rate: float = 0.01,
    model: ModelName = "mbg_nbd",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every customer for churn, near-term purchases, next order date and 12-month LTV.

    `summary` has customer_id, frequency, recency, T (days, measured up to `as_of`) and
    monetary_value (mean repeat order value). Customers who never ordered are rows with a
    missing T or frequency, or n_orders == 0 if that column is present. Fits `model` (MBG/NBD
    by default, or BG/NBD, under which every one-time buyer has churn probability 0) and
    Gamma-Gamma on the whole base and falls back to heuristics when that is unreliable; the
    output never contains NaN or infinity. The predicted_purchases column keeps its name
    `predicted_purchases_90d` whatever `horizon_days` is, so the table schema stays fixed.

    The same as `fit_scoring_model` then `apply_scoring_fit` on the same summary.
    """
    started = _time.perf_counter()
    fit = fit_scoring_model(summary, as_of, horizon_days, ltv_months, monthly_discount_rate, model)
    result, n_heuristic = _apply(fit, summary, as_of)
    metadata = {**fit.metadata, "n_rows_heuristic": n_heuristic}
    metadata["score_seconds"] = round(_time.perf_counter() - started, 3)
    return result, metadata


def fit_scoring_model(
    summary: pd.DataFrame,
    as_of: date,
    horizon_days: int = 90,
    ltv_months: int = 12,
    monthly_discount_rate: float = 0.01,
    model: ModelName = "mbg_nbd",
) -> ScoringFit:
    """Fit the purchase and spend models on the whole base (see `score_customers`), deciding
    once, on the population, whether the fits are trustworthy or the heuristics take over."""
    if model not in PURCHASE_MODELS:
        raise ValueError(f"model must be one of {sorted(PURCHASE_MODELS)}, got {model!r}")
    model_class, label = PURCHASE_MODELS[model]
    started = _time.perf_counter()
    clean, zero_orders, n_repaired = _clean_summary(summary)
    x = clean["frequency"].to_numpy()
    tx = clean["recency"].to_numpy()
    big_t = clean["T"].to_numpy()
    m = clean["monetary_value"].to_numpy()
    active = ~zero_orders
    repeat = active & (x > 0)
    n_repeat = int(repeat.sum())

    metadata: dict[str, Any] = {
        "model": model,
        "method": "heuristic",
        "params": {},
        "n_customers": int(len(clean)),
        "n_repeat": n_repeat,
        "n_zero_orders": int(zero_orders.sum()),
        "n_repaired_rows": n_repaired,
        "log_likelihood": None,
        "fallback_reason": None,
        "spend_method": "heuristic",
        "spend_params": {},
        "spend_fallback_reason": None,
        "as_of": as_of.isoformat(),
        "horizon_days": horizon_days,
        "ltv_months": ltv_months,
        "days_per_month": DAYS_PER_MONTH,
        "monthly_discount_rate": monthly_discount_rate,
    }

    bgf: BetaGeoModel | None = None
    if n_repeat < MIN_REPEAT_CUSTOMERS:
        metadata["fallback_reason"] = (
            f"only {n_repeat} repeat customers (< {MIN_REPEAT_CUSTOMERS}) to fit {label}"
        )
    else:
        try:
            bgf = model_class().fit(x[active], tx[active], big_t[active])
        except (PredictiveModelError, ValueError, ArithmeticError) as error:
            metadata["fallback_reason"] = f"{label} fit failed: {error}"
        else:
            metadata.update(method=model, params=bgf.params_, log_likelihood=bgf.log_likelihood_)

    spend, spend_meta = _fit_spend(x, m, repeat)
    metadata.update(spend_meta)
    if bgf is not None:
        model_scores = _model_scores(
            bgf, x, tx, big_t, horizon_days, ltv_months, monthly_discount_rate, spend
        )
        finite = np.stack([model_scores[k] for k in ("churn", "purchases", "ltv")])
        bad = ~np.all(np.isfinite(finite), axis=0) | np.isnan(model_scores["next_days"])
        if bad.mean() > MAX_UNSCORABLE_SHARE:
            # parameters that break the closed forms for many customers are degenerate
            metadata.update(
                method="heuristic",
                fallback_reason=f"{label} predictions not finite for {int(bad.sum())} customers "
                f"(degenerate parameters {bgf.params_})",
            )
    if metadata["method"] == "heuristic":
        logger.info("Scoring with heuristics: %s", metadata["fallback_reason"])
    metadata["fit_seconds"] = round(_time.perf_counter() - started, 3)
    return ScoringFit(
        model=model,
        method=metadata["method"],
        params=dict(metadata["params"]),
        spend_method=metadata["spend_method"],
        spend_params=dict(metadata["spend_params"]),
        pooled_gap=_pooled_gap(x, tx, active),
        population_mean_spend=_mean_repeat_spend(x, m, repeat),
        horizon_days=horizon_days,
        ltv_months=ltv_months,
        monthly_discount_rate=monthly_discount_rate,
        metadata=metadata,
    )


def apply_scoring_fit(
    fit: ScoringFit, summary: pd.DataFrame, as_of: date
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score the customers of `summary` (any subset of the base) with a fit made earlier: row
    by row, so a customer's scores do not depend on who else is in `summary`."""
    started = _time.perf_counter()
    result, n_heuristic = _apply(fit, summary, as_of)
    metadata = {
        **fit.metadata,
        "n_rows_heuristic": n_heuristic,
        "as_of": as_of.isoformat(),
        "score_seconds": round(_time.perf_counter() - started, 3),
    }
    return result, metadata


def _apply(fit: ScoringFit, summary: pd.DataFrame, as_of: date) -> tuple[pd.DataFrame, int]:
    clean, zero_orders, _ = _clean_summary(summary)
    x = clean["frequency"].to_numpy()
    tx = clean["recency"].to_numpy()
    big_t = clean["T"].to_numpy()
    m = clean["monetary_value"].to_numpy()
    active = ~zero_orders
    repeat = active & (x > 0)
    horizon_days, ltv_months, rate = fit.horizon_days, fit.ltv_months, fit.monthly_discount_rate

    spend = _apply_spend(fit, x, m, repeat)
    heuristic = _heuristic_scores(
        x, tx, big_t, fit.pooled_gap, horizon_days, ltv_months, rate, spend
    )
    method = np.full(len(clean), "heuristic")
    scores = heuristic
    if fit.method != "heuristic":
        model_class, label = PURCHASE_MODELS[fit.method]
        bgf = model_class()
        bgf.params_ = dict(fit.params)
        model_scores = _model_scores(bgf, x, tx, big_t, horizon_days, ltv_months, rate, spend)
        finite = np.stack([model_scores[k] for k in ("churn", "purchases", "ltv")])
        bad = ~np.all(np.isfinite(finite), axis=0) | np.isnan(model_scores["next_days"])
        scores = {k: np.where(bad, heuristic[k], model_scores[k]) for k in model_scores}
        method = np.where(bad, "heuristic", fit.method)
        if bad.any():
            logger.warning("%s could not score %d customers; used heuristics", label, bad.sum())

    # zero-order customers have no relationship to churn from and no purchase clock to run
    churn = np.where(zero_orders, 1.0, np.clip(scores["churn"], 0.0, 1.0))
    purchases = np.where(zero_orders, 0.0, np.clip(scores["purchases"], 0.0, horizon_days))
    ltv = np.where(zero_orders, 0.0, np.clip(np.nan_to_num(scores["ltv"], posinf=0.0), 0.0, None))
    next_days = np.where(zero_orders, np.inf, scores["next_days"])
    has_date = next_days <= NEXT_ORDER_MAX_DAYS
    offsets = np.ceil(np.where(has_date, next_days, 0.0)).astype("int64")
    next_date = (np.datetime64(as_of, "D") + offsets.astype("timedelta64[D]")).astype(object)
    next_date[~has_date] = None

    result = pd.DataFrame(
        {
            "customer_id": clean["customer_id"].to_numpy(),
            "churn_probability": churn,
            "predicted_purchases_90d": purchases,
            "predicted_next_order_date": next_date,
            "predicted_ltv": ltv,
            "scoring_method": method,
        },
        columns=SCORE_COLUMNS,
    )
    return result, int((method == "heuristic").sum())


def _clean_summary(summary: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Coerce the summary into the model's domain instead of failing the whole run."""
    required = ["customer_id", "frequency", "recency", "T"]
    missing = [c for c in required if c not in summary.columns]
    if missing:
        raise InvalidSummaryError(f"summary is missing columns {missing}")
    clean = pd.DataFrame({"customer_id": summary["customer_id"].to_numpy()})
    for column in RFM_COLUMNS:
        values = summary[column] if column in summary.columns else pd.Series(0.0, summary.index)
        clean[column] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)

    zero_orders = ~np.isfinite(clean["frequency"].to_numpy()) | ~np.isfinite(clean["T"].to_numpy())
    if "n_orders" in summary.columns:
        n_orders = pd.to_numeric(summary["n_orders"], errors="coerce").fillna(0).to_numpy()
        zero_orders |= n_orders <= 0
    clean.loc[zero_orders, RFM_COLUMNS] = 0.0

    raw = clean[RFM_COLUMNS].to_numpy().copy()
    for column in RFM_COLUMNS:
        values = np.nan_to_num(clean[column].to_numpy(), nan=0.0, posinf=0.0, neginf=0.0)
        clean[column] = np.clip(values, 0.0, _MAX_INPUT_VALUE)
    clean["frequency"] = np.round(clean["frequency"])
    clean["recency"] = np.minimum(clean["recency"], clean["T"])
    one_time = clean["frequency"].to_numpy() == 0
    # a one-time buyer's recency and repeat spend are 0 by definition: not worth reporting
    clean.loc[one_time, ["recency", "monetary_value"]] = 0.0
    raw[one_time, 1] = 0.0
    raw[one_time, 3] = 0.0
    changed = ~np.all(raw == clean[RFM_COLUMNS].to_numpy(), axis=1)
    n_repaired = int((changed & ~zero_orders).sum())
    if n_repaired:
        logger.warning("Repaired %d summary rows outside the model's domain", n_repaired)
    return clean, zero_orders, n_repaired


def _fit_spend(
    x: np.ndarray, m: np.ndarray, repeat: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """Expected value per future order: Gamma-Gamma if it fits, else shrunk mean."""
    paying = repeat & (m > 0)
    n_paying = int(paying.sum())
    meta: dict[str, Any] = {}
    if n_paying >= MIN_REPEAT_CUSTOMERS:
        try:
            ggf = GammaGammaModel().fit(x[paying], m[paying])
            spend = ggf.conditional_expected_average_profit(x, np.where(paying, m, 0.0))
            if np.all(np.isfinite(spend)):
                meta.update(spend_method="gamma_gamma", spend_params=ggf.params_)
                return np.clip(spend, 0.0, None), meta
            meta["spend_fallback_reason"] = "Gamma-Gamma produced non-finite spend"
        except (PredictiveModelError, ValueError, ArithmeticError) as error:
            meta["spend_fallback_reason"] = f"Gamma-Gamma fit failed: {error}"
    else:
        meta["spend_fallback_reason"] = (
            f"only {n_paying} repeat customers with spend (< {MIN_REPEAT_CUSTOMERS})"
        )
    population_mean = _mean_repeat_spend(x, m, repeat)
    meta.update(spend_method="heuristic", spend_params={"population_mean": population_mean})
    return _shrunk_spend(x, m, paying, population_mean), meta


def _apply_spend(fit: ScoringFit, x: np.ndarray, m: np.ndarray, repeat: np.ndarray) -> np.ndarray:
    """The fitted spend model on any customers; a customer it cannot score (unseen at fit
    time) gets the shrunk mean of the fit's population."""
    paying = repeat & (m > 0)
    if fit.spend_method == "gamma_gamma":
        ggf = GammaGammaModel()
        ggf.params_ = dict(fit.spend_params)
        with np.errstate(all="ignore"):
            spend = ggf.conditional_expected_average_profit(x, np.where(paying, m, 0.0))
        fallback = _shrunk_spend(x, m, paying, fit.population_mean_spend)
        return np.where(np.isfinite(spend), np.clip(spend, 0.0, None), fallback)
    return _shrunk_spend(x, m, paying, fit.population_mean_spend)


def _mean_repeat_spend(x: np.ndarray, m: np.ndarray, repeat: np.ndarray) -> float:
    paying = repeat & (m > 0)
    return float(m[paying].mean()) if paying.any() else 0.0


def _shrunk_spend(
    x: np.ndarray, m: np.ndarray, paying: np.ndarray, population_mean: float
) -> np.ndarray:
    # one pseudo-order at the population mean keeps one lucky order from dominating
    return (x * np.where(paying, m, 0.0) + population_mean) / (np.where(paying, x, 0.0) + 1)


def _model_scores(
    bgf: BetaGeoModel,
    x: np.ndarray,
    tx: np.ndarray,
    big_t: np.ndarray,
    horizon_days: int,
    ltv_months: int,
    monthly_discount_rate: float,
    spend: np.ndarray,
) -> dict[str, np.ndarray]:
    (ux, utx, ut), _, codes = _compress(x, tx, big_t)
    with np.errstate(all="ignore"):
        p_alive = bgf.conditional_probability_alive(ux, utx, ut)
        purchases = bgf.conditional_expected_number_of_purchases_up_to_time(
            horizon_days, ux, utx, ut
        )
        next_days = bgf.time_to_purchase_probability(NEXT_ORDER_PROBABILITY, ux, utx, ut)
        monthly = _discounted_monthly_purchases(
            bgf, ux, utx, ut, ltv_months, monthly_discount_rate, DAYS_PER_MONTH
        )
    return {
        "churn": 1 - p_alive[codes],
        "purchases": purchases[codes],
        "next_days": next_days[codes],
        "ltv": spend * monthly[codes],
    }


def _pooled_gap(x: np.ndarray, tx: np.ndarray, active: np.ndarray) -> float:
    """The base's median gap between orders (the heuristics' prior), in days."""
    repeat = active & (x > 0)
    gaps = tx[repeat] / x[repeat]
    gaps = gaps[gaps > 0]
    pooled_gap = float(np.median(gaps)) if gaps.size else HEURISTIC_DEFAULT_GAP_DAYS
    return max(pooled_gap, 1.0)


def _heuristic_scores(
    x: np.ndarray,
    tx: np.ndarray,
    big_t: np.ndarray,
    pooled_gap: float,
    horizon_days: int,
    ltv_months: int,
    monthly_discount_rate: float,
    spend: np.ndarray,
) -> dict[str, np.ndarray]:
    """Rules of thumb for bases too small to fit: see docs/predictive.md#fallback-heuristics."""
    # the customer's own gaps plus one pseudo-gap at the pooled value
    gap = np.maximum((tx + pooled_gap) / (x + 1), 1.0)
    silence = np.maximum(big_t - tx, 0.0)
    p_alive = np.exp(-silence / (HEURISTIC_SILENCE_GAPS * gap))
    rate = 1.0 / gap
    purchases = p_alive * rate * horizon_days
    reachable = p_alive > NEXT_ORDER_PROBABILITY
    remaining = np.where(reachable, 1 - NEXT_ORDER_PROBABILITY / np.where(reachable, p_alive, 1), 1)
    next_days = np.where(reachable, -gap * np.log(remaining), np.inf)
    discount = sum((1 + monthly_discount_rate) ** -k for k in range(1, ltv_months + 1))
    ltv = p_alive * rate * DAYS_PER_MONTH * discount * spend
    return {"churn": 1 - p_alive, "purchases": purchases, "next_days": next_days, "ltv": ltv}
