"""Fitting machinery shared by the models: errors, input checks, the bounded optimiser, and the
RFM summary built from a transaction log (the models' input). Moved from crm_pipeline/predictive.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
from scipy import optimize

ArrayLike = np.ndarray | pd.Series | Sequence[float] | float

# Log-parameter box for the optimiser: wide enough for any sane base, narrow enough that a
# degenerate one stops at the edge instead of overflowing.
_LOG_BOUND = 15.0
_FREQ_UNITS = {"D": 1.0, "W": 7.0}


def _penalized_objective(
    ll: np.ndarray,
    gradient: np.ndarray,
    log_params: np.ndarray,
    weights: np.ndarray,
    penalizer_coef: float,
) -> tuple[float, np.ndarray]:
    """Weighted mean negative log-likelihood (+ L2 penalty) and its gradient in log-params;
    non-finite points get a large value so the optimizer steps back instead of failing."""
    total = weights.sum()
    value = -(weights @ ll) / total
    grad = -(gradient @ weights) / total
    if penalizer_coef > 0:
        params = np.exp(log_params)
        value += penalizer_coef * float(params @ params)
        grad += 2 * penalizer_coef * params * params
    if not np.isfinite(value) or not np.all(np.isfinite(grad)):
        return 1e10, np.zeros_like(log_params)
    return float(value), grad


def _stable(value: float) -> float:
    """A fitted parameter to 7 significant digits: far below the fit's own uncertainty, but
    enough that optimizer noise in the last bits (thread-dependent BLAS sums) never changes a
    stored score between two runs on the same data."""
    return float(f"{float(value):.7g}")


class PredictiveModelError(Exception):
    """Base class for errors raised by this module."""


class InvalidSummaryError(PredictiveModelError, ValueError):
    """The RFM summary violates the model's assumptions (negative values, recency > T, ...)."""


class ModelFitError(PredictiveModelError, RuntimeError):
    """Maximum likelihood did not converge to finite parameters; the caller should fall back."""


class NotFittedError(PredictiveModelError, RuntimeError):
    """A prediction was requested before `fit`."""


# --------------------------------------------------------------------------------------------
# helpers


def _as_float_array(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(array)):
        raise InvalidSummaryError(f"{name} contains NaN or infinite values")
    return array


def _validate_rfm(frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> tuple[np.ndarray, ...]:
    x = _as_float_array(frequency, "frequency")
    tx = _as_float_array(recency, "recency")
    big_t = _as_float_array(T, "T")
    if np.any(x < 0) or np.any(tx < 0) or np.any(big_t < 0):
        raise InvalidSummaryError("frequency, recency and T must be non-negative")
    if np.any(tx > big_t + 1e-9):
        raise InvalidSummaryError("recency must not exceed T")
    if np.any((x == 0) & (tx > 0)):
        raise InvalidSummaryError("customers with frequency 0 must have recency 0")
    return np.broadcast_arrays(x, tx, big_t)


def _compress(*columns: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Collapse identical rows: likelihoods and predictions only depend on the row's values.

    Returns the unique rows, their counts and, for every input row, the index of its unique row.
    """
    frame = pd.DataFrame({str(i): column for i, column in enumerate(columns)})
    codes = frame.groupby(list(frame.columns), sort=False).ngroup().to_numpy()
    n_unique = int(codes.max()) + 1 if codes.size else 0
    counts = np.bincount(codes, minlength=n_unique).astype(float)
    first = np.empty(n_unique, dtype=np.int64)
    first[codes[::-1]] = np.arange(codes.size - 1, -1, -1)
    return tuple(column[first] for column in columns), counts, codes


def _minimize_log_params(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]], start: np.ndarray, n_params: int
) -> optimize.OptimizeResult:
    """L-BFGS-B on log-parameters: keeps parameters positive without constraints."""
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * n_params
    return optimize.minimize(
        objective,
        np.clip(start, -_LOG_BOUND + 1, _LOG_BOUND - 1),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
    )


def _check_converged(result: optimize.OptimizeResult, names: Sequence[str]) -> np.ndarray:
    params = np.exp(result.x)
    if not np.all(np.isfinite(params)) or not np.isfinite(result.fun):
        raise ModelFitError(f"non-finite parameters or likelihood: {result.message}")
    # L-BFGS-B sometimes stops on a line search at the optimum; accept a vanishing gradient.
    gradient_norm = float(np.max(np.abs(result.jac))) if result.jac is not None else np.inf
    if not result.success and gradient_norm > 1e-4:
        raise ModelFitError(f"optimiser did not converge: {result.message}")
    at_bound = [n for n, v in zip(names, result.x, strict=True) if abs(v) >= _LOG_BOUND - 1e-6]
    if at_bound:
        raise ModelFitError(f"parameters ran to the edge of the search box: {at_bound}")
    return params


# --------------------------------------------------------------------------------------------
# transactions -> RFM summary


def summary_data_from_transactions(
    transactions: pd.DataFrame,
    customer_id_col: str,
    datetime_col: str,
    monetary_value_col: str | None = None,
    observation_period_end: date | str | pd.Timestamp | None = None,
    freq: Literal["D", "W"] = "D",
) -> pd.DataFrame:
    """Build the RFM summary the models need from a transaction log, one row per customer.

    Purchases are aggregated per calendar day (several orders on one day count once, their
    values summed). frequency = purchase days - 1; recency and T run from the first purchase
    day to the last purchase day and to `observation_period_end` (inclusive, default: last
    transaction), in fractional units of `freq` (D = 1 day, W = 7 days). monetary_value is the
    mean of the repeat purchase days, excluding the first one, and 0 for one-time buyers.

    Unlike `lifetimes` with freq="W", purchases are not bucketed into weeks, which is what the
    published CDNOW estimates use. Returns a frame indexed by customer id.
    """
    if freq not in _FREQ_UNITS:
        raise ValueError(f"freq must be one of {sorted(_FREQ_UNITS)}, got {freq!r}")
    columns = [customer_id_col, datetime_col] + ([monetary_value_col] if monetary_value_col else [])
    frame = transactions[columns].copy()
    frame[datetime_col] = pd.to_datetime(frame[datetime_col])
    if frame[datetime_col].dt.tz is not None:
        frame[datetime_col] = frame[datetime_col].dt.tz_localize(None)
    frame["_day"] = frame[datetime_col].dt.normalize()
    end = (
        frame["_day"].max()
        if observation_period_end is None
        else pd.Timestamp(observation_period_end).normalize()
    )
    frame = frame[frame["_day"] <= end]

    value_col = monetary_value_col or "_value"
    if monetary_value_col is None:
        frame[value_col] = 0.0
    daily = frame.groupby([customer_id_col, "_day"], sort=True)[value_col].sum().reset_index()
    first_day = daily.groupby(customer_id_col)["_day"].transform("min")
    daily["_repeat"] = daily["_day"] > first_day

    grouped = daily.groupby(customer_id_col)
    unit = pd.Timedelta(days=_FREQ_UNITS[freq])
    first = grouped["_day"].min()
    summary = pd.DataFrame(
        {
            "frequency": grouped.size().astype(float) - 1,
            "recency": (grouped["_day"].max() - first) / unit,
            "T": (end - first) / unit,
        }
    )
    if monetary_value_col is not None:
        repeat_mean = daily[daily["_repeat"]].groupby(customer_id_col)[value_col].mean()
        summary["monetary_value"] = repeat_mean.reindex(summary.index).fillna(0.0)
    return summary
