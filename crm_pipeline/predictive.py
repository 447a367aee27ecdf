"""Buy-till-you-die models for customer scoring: (M)BG/NBD for purchases, Gamma-Gamma for spend.

The API follows the `lifetimes` package (`BetaGeoFitter`, `ModifiedBetaGeoFitter`,
`GammaGammaFitter`) so analysts can carry notebooks over; `score_customers` is the pipeline's
entry point and never raises on odd data: small or degenerate customer bases fall back to the
heuristics described in docs/predictive.md and say so in the returned metadata.

Inputs are RFM summaries: frequency = number of repeat purchase days, recency = time from first
to last purchase, T = time from first purchase to the end of observation, all in one time unit.
"""

from __future__ import annotations

import logging
import math
import time as _time
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
from scipy import optimize, special

logger = logging.getLogger(__name__)

ArrayLike = np.ndarray | pd.Series | Sequence[float] | float

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

# Log-parameter box for the optimiser: wide enough for any sane base, narrow enough that a
# degenerate one stops at the edge instead of overflowing.
_LOG_BOUND = 15.0
_FREQ_UNITS = {"D": 1.0, "W": 7.0}
_CLV_MONTH_FACTOR = {"W": 4.345, "M": 1.0, "D": 30.0, "H": 30.0 * 24.0}


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
# BG/NBD and MBG/NBD


class BetaGeoModel:
    """BG/NBD model (Fader, Hardie & Lee 2005): Poisson purchases, geometric drop-out.

    Purchase rates are Gamma(r, alpha) across customers and drop-out probabilities after each
    purchase are Beta(a, b). Mirrors `lifetimes.BetaGeoFitter`.
    """

    param_names = ("r", "alpha", "a", "b")

    def __init__(self, penalizer_coef: float = 0.0) -> None:
        self.penalizer_coef = penalizer_coef
        self.params_: dict[str, float] = {}
        self.log_likelihood_: float = math.nan
        self.n_customers_: int = 0

    # -- likelihood ------------------------------------------------------------------------

    @staticmethod
    def _log_likelihood_terms(
        log_params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-row log-likelihood and its gradient with respect to the log-parameters."""
        r, alpha, a, b = np.exp(log_params)
        repeat = x > 0
        b_x1 = np.where(repeat, b + x - 1, 1.0)
        log_alpha_t = np.log(alpha + big_t)
        log_alpha_tx = np.log(alpha + tx)

        a3 = -(r + x) * log_alpha_t
        a4 = np.where(repeat, np.log(a) - np.log(b_x1) - (r + x) * log_alpha_tx, -np.inf)
        tail = np.logaddexp(a3, a4)
        # omega = weight of the "dropped out after the last purchase" branch (= 1 - P(alive))
        omega = np.exp(a4 - tail)

        ll = (
            special.gammaln(r + x)
            - special.gammaln(r)
            + r * np.log(alpha)
            + special.betaln(a, b + x)
            - special.betaln(a, b)
            + tail
        )

        psi_abx = special.digamma(a + b + x)
        psi_ab = special.digamma(a + b)
        d_r = (
            special.digamma(r + x)
            - special.digamma(r)
            + np.log(alpha)
            - (1 - omega) * log_alpha_t
            - omega * log_alpha_tx
        )
        d_alpha = r / alpha - (r + x) * ((1 - omega) / (alpha + big_t) + omega / (alpha + tx))
        d_a = psi_ab - psi_abx + omega / a
        d_b = special.digamma(b + x) - special.digamma(b) + psi_ab - psi_abx - omega / b_x1
        gradient = np.stack([d_r * r, d_alpha * alpha, d_a * a, d_b * b])
        return ll, gradient

    def _objective(
        self,
        log_params: np.ndarray,
        x: np.ndarray,
        tx: np.ndarray,
        big_t: np.ndarray,
        weights: np.ndarray,
    ) -> tuple[float, np.ndarray]:
        ll, gradient = self._log_likelihood_terms(log_params, x, tx, big_t)
        return _penalized_objective(ll, gradient, log_params, weights, self.penalizer_coef)

    def fit(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        weights: ArrayLike | None = None,
        initial_params: Sequence[float] | None = None,
    ) -> Self:
        """Maximum-likelihood fit; identical (frequency, recency, T) rows are evaluated once."""
        x, tx, big_t = _validate_rfm(frequency, recency, T)
        if x.size == 0:
            raise InvalidSummaryError("cannot fit on zero customers")
        row_weights = np.ones_like(x) if weights is None else _as_float_array(weights, "weights")
        (ux, utx, ut), counts, codes = _compress(x, tx, big_t)
        unique_weights = np.bincount(codes, weights=row_weights, minlength=counts.size)

        if initial_params is None:
            # E[rate] = r / alpha: start near one repeat purchase per observed lifetime
            scale = max(float(np.average(ut, weights=unique_weights)), 1e-6)
            starts = [np.log([1.0, scale, 1.0, 1.0]), np.log([0.5, scale / 4, 0.5, 2.0])]
        else:
            starts = [np.log(np.asarray(initial_params, dtype=float))]

        last_error: ModelFitError | None = None
        for start in starts:
            result = _minimize_log_params(
                lambda lp: self._objective(lp, ux, utx, ut, unique_weights), start, 4
            )
            try:
                params = _check_converged(result, self.param_names)
            except ModelFitError as error:
                last_error = error
                continue
            self.params_ = dict(zip(self.param_names, map(_stable, params), strict=True))
            ll, _ = self._log_likelihood_terms(result.x, ux, utx, ut)
            self.log_likelihood_ = float(unique_weights @ ll)
            self.n_customers_ = int(x.size)
            return self
        assert last_error is not None
        raise last_error

    # -- predictions -----------------------------------------------------------------------

    def _params(self) -> tuple[float, float, float, float]:
        if not self.params_:
            raise NotFittedError(f"{type(self).__name__}.fit must be called before predicting")
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    def conditional_probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> np.ndarray:
        """P(customer has not dropped out at T | history); 1 for customers with no repeats."""
        r, alpha, a, b = self._params()
        x, tx, big_t = (np.asarray(v, dtype=float) for v in (frequency, recency, T))
        repeat = x > 0
        log_odds_dead = (
            np.log(a)
            - np.log(np.where(repeat, b + x - 1, 1.0))
            + (r + x) * (np.log(alpha + big_t) - np.log(alpha + tx))
        )
        return np.where(repeat, special.expit(-log_odds_dead), 1.0)

    def _b_if_alive(self, b: float) -> float:
        """Given alive after x repeats, p ~ Beta(a, this + x): b plus the drop-out chances
        survived beyond the x repeats (none in BG/NBD)."""
        return b

    def expected_number_of_purchases_up_to_time(self, t: ArrayLike) -> np.ndarray:
        """E[X(t)] for a customer who has just made a first purchase."""
        zeros = np.zeros_like(np.asarray(t, dtype=float))
        return self.conditional_expected_number_of_purchases_up_to_time(t, zeros, zeros, zeros)

    def conditional_expected_number_of_purchases_up_to_time(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> np.ndarray:
        """E[purchases in (T, T + t] | history] (FHL 2005, eq. 10)."""
        r, alpha, a, b = self._params()
        b = self._b_if_alive(b)
        t, x, tx, big_t = (np.asarray(v, dtype=float) for v in (t, frequency, recency, T))
        p_alive = self.conditional_probability_alive(x, tx, big_t)
        # The formula has a removable singularity at a = 1; straddle it.
        if abs(a - 1) < 1e-5:
            lo = _expected_if_alive(t, x, big_t, r, alpha, 1 - 1e-5, b)
            hi = _expected_if_alive(t, x, big_t, r, alpha, 1 + 1e-5, b)
            return p_alive * (lo + hi) / 2
        return p_alive * _expected_if_alive(t, x, big_t, r, alpha, a, b)

    def conditional_probability_of_purchase_up_to_time(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> np.ndarray:
        """P(at least one purchase in (T, T + t] | history).

        Drop-out only happens right after a purchase, so a customer alive at T buys in the
        window iff the Poisson clock ticks; with rate ~ Gamma(r + x, alpha + T) a posteriori,
        P(no tick) = ((alpha + T) / (alpha + T + t)) ** (r + x).
        """
        r, alpha, _, _ = self._params()
        t, x, tx, big_t = (np.asarray(v, dtype=float) for v in (t, frequency, recency, T))
        p_alive = self.conditional_probability_alive(x, tx, big_t)
        log_no_tick = (r + x) * (np.log(alpha + big_t) - np.log(alpha + big_t + t))
        return p_alive * -np.expm1(log_no_tick)

    def time_to_purchase_probability(
        self,
        probability: float,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
    ) -> np.ndarray:
        """Smallest t with P(purchase in (T, T + t]) >= probability; inf if never reached.

        Closed-form inverse of `conditional_probability_of_purchase_up_to_time`.
        """
        r, alpha, _, _ = self._params()
        x, tx, big_t = (np.asarray(v, dtype=float) for v in (frequency, recency, T))
        p_alive = self.conditional_probability_alive(x, tx, big_t)
        reachable = p_alive > probability
        remaining = np.where(reachable, 1 - probability / np.where(reachable, p_alive, 1.0), 1.0)
        # ((alpha+T)/(alpha+T+t))^(r+x) = remaining  =>  t = (alpha+T) * (remaining^(-1/(r+x)) - 1)
        t = (alpha + big_t) * np.expm1(-np.log(remaining) / (r + x))
        return np.where(reachable, t, np.inf)


class ModifiedBetaGeoModel(BetaGeoModel):
    """MBG/NBD model (Batislam, Denizel & Filiztekin 2007); mirrors
    `lifetimes.ModifiedBetaGeoFitter`.

    As BG/NBD, except that customers may also drop out right after their first purchase, with
    the same Beta(a, b) probability p as after every repeat purchase. A customer seen alive at T
    with x repeats has survived x + 1 drop-out chances, so one-time buyers are no longer
    certainly alive: their P(alive) = 1 / (1 + a/b * ((alpha + T) / alpha)^r) falls with T.
    """

    @staticmethod
    def _log_likelihood_terms(
        log_params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-row log-likelihood and its gradient with respect to the log-parameters.

        L = Gamma(r+x) alpha^r / Gamma(r) * B(a, b+x+1) / B(a, b)
            * [(alpha+T)^-(r+x) + a/(b+x) * (alpha+t_x)^-(r+x)]
        """
        r, alpha, a, b = np.exp(log_params)
        log_alpha_t = np.log(alpha + big_t)
        log_alpha_tx = np.log(alpha + tx)

        a3 = -(r + x) * log_alpha_t
        a4 = np.log(a) - np.log(b + x) - (r + x) * log_alpha_tx
        tail = np.logaddexp(a3, a4)
        # omega = weight of the "dropped out after the last purchase" branch (= 1 - P(alive))
        omega = np.exp(a4 - tail)

        ll = (
            special.gammaln(r + x)
            - special.gammaln(r)
            + r * np.log(alpha)
            + special.betaln(a, b + x + 1)
            - special.betaln(a, b)
            + tail
        )

        psi_abx1 = special.digamma(a + b + x + 1)
        psi_ab = special.digamma(a + b)
        d_r = (
            special.digamma(r + x)
            - special.digamma(r)
            + np.log(alpha)
            - (1 - omega) * log_alpha_t
            - omega * log_alpha_tx
        )
        d_alpha = r / alpha - (r + x) * ((1 - omega) / (alpha + big_t) + omega / (alpha + tx))
        d_a = psi_ab - psi_abx1 + omega / a
        d_b = special.digamma(b + x + 1) - special.digamma(b) + psi_ab - psi_abx1 - omega / (b + x)
        gradient = np.stack([d_r * r, d_alpha * alpha, d_a * a, d_b * b])
        return ll, gradient

    def conditional_probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> np.ndarray:
        """P(customer has not dropped out at T | history), < 1 for one-time buyers too."""
        r, alpha, a, b = self._params()
        x, tx, big_t = (np.asarray(v, dtype=float) for v in (frequency, recency, T))
        log_odds_dead = (
            np.log(a) - np.log(b + x) + (r + x) * (np.log(alpha + big_t) - np.log(alpha + tx))
        )
        return special.expit(-log_odds_dead)

    def _b_if_alive(self, b: float) -> float:
        # alive after x repeats = survived x + 1 drop-out chances: p ~ Beta(a, b + x + 1)
        return b + 1


def _expected_if_alive(
    t: np.ndarray, x: np.ndarray, big_t: np.ndarray, r: float, alpha: float, a: float, b: float
) -> np.ndarray:
    """E[purchases in (T, T + t] | alive at T].

    FHL's form, (1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z), overflows for heavy buyers; Euler's
    transformation turns it into (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z), whose parameters
    stay small whatever x is.
    """
    z = t / (alpha + big_t + t)
    hyp = special.hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
    term = np.exp((a - 1) * np.log1p(-z)) * hyp
    return (a + b + x - 1) / (a - 1) * (1 - term)


# --------------------------------------------------------------------------------------------
# Gamma-Gamma


class GammaGammaModel:
    """Gamma-Gamma spend model (Fader & Hardie 2013, note 025); mirrors `lifetimes`.

    Each transaction value is Gamma(p, nu) with nu ~ Gamma(q, v) across customers, so a
    customer's mean spend is shrunk towards the population mean by how many purchases we saw.
    Assumes spend is independent of purchase frequency.
    """

    param_names = ("p", "q", "v")

    def __init__(self, penalizer_coef: float = 0.0) -> None:
        self.penalizer_coef = penalizer_coef
        self.params_: dict[str, float] = {}
        self.log_likelihood_: float = math.nan

    @staticmethod
    def _log_likelihood_terms(
        log_params: np.ndarray, x: np.ndarray, m: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        p, q, v = np.exp(log_params)
        px = p * x
        log_xm_v = np.log(x * m + v)
        ll = (
            special.gammaln(px + q)
            - special.gammaln(px)
            - special.gammaln(q)
            + q * np.log(v)
            + (px - 1) * np.log(m)
            + px * np.log(x)
            - (px + q) * log_xm_v
        )
        psi_pxq = special.digamma(px + q)
        d_p = x * (psi_pxq - special.digamma(px) + np.log(m) + np.log(x) - log_xm_v)
        d_q = psi_pxq - special.digamma(q) + np.log(v) - log_xm_v
        d_v = q / v - (px + q) / (x * m + v)
        return ll, np.stack([d_p * p, d_q * q, d_v * v])

    def _objective(
        self, log_params: np.ndarray, x: np.ndarray, m: np.ndarray, weights: np.ndarray
    ) -> tuple[float, np.ndarray]:
        ll, gradient = self._log_likelihood_terms(log_params, x, m)
        return _penalized_objective(ll, gradient, log_params, weights, self.penalizer_coef)

    def fit(
        self,
        frequency: ArrayLike,
        monetary_value: ArrayLike,
        weights: ArrayLike | None = None,
        initial_params: Sequence[float] | None = None,
    ) -> GammaGammaModel:
        """Fit on repeat customers only: monetary_value is the mean of their repeat purchases."""
        x = _as_float_array(frequency, "frequency")
        m = _as_float_array(monetary_value, "monetary_value")
        if x.size == 0:
            raise InvalidSummaryError("cannot fit on zero customers")
        if np.any(x <= 0) or np.any(m <= 0):
            raise InvalidSummaryError(
                "Gamma-Gamma needs repeat customers with positive spend; filter frequency > 0"
            )
        row_weights = np.ones_like(x) if weights is None else _as_float_array(weights, "weights")
        (ux, um), counts, codes = _compress(x, m)
        unique_weights = np.bincount(codes, weights=row_weights, minlength=counts.size)

        if initial_params is None:
            mean_spend = float(np.average(um, weights=unique_weights))
            # p / nu = mean spend with E[nu] = q / v: p = q = 2 gives v = mean spend
            start = np.log([2.0, 2.0, mean_spend])
        else:
            start = np.log(np.asarray(initial_params, dtype=float))
        result = _minimize_log_params(
            lambda lp: self._objective(lp, ux, um, unique_weights), start, 3
        )
        params = _check_converged(result, self.param_names)
        self.params_ = dict(zip(self.param_names, map(_stable, params), strict=True))
        ll, _ = self._log_likelihood_terms(result.x, ux, um)
        self.log_likelihood_ = float(unique_weights @ ll)
        return self

    def conditional_expected_average_profit(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> np.ndarray:
        """E[spend per purchase | x purchases averaging m]: a frequency-weighted blend of the
        customer's mean and the population mean p*v/(q-1)."""
        if not self.params_:
            raise NotFittedError("GammaGammaModel.fit must be called before predicting")
        p, q, v = self.params_["p"], self.params_["q"], self.params_["v"]
        if q <= 1:
            raise ModelFitError(f"q = {q:.3g} <= 1: the population mean spend is infinite")
        x = np.asarray(frequency, dtype=float)
        m = np.where(x > 0, np.asarray(monetary_value, dtype=float), 0.0)
        return p * (v + x * m) / (p * x + q - 1)

    def customer_lifetime_value(
        self,
        transaction_prediction_model: BetaGeoModel,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        monetary_value: ArrayLike,
        time: int = 12,
        discount_rate: float = 0.01,
        freq: Literal["D", "W", "M", "H"] = "D",
    ) -> pd.Series:
        """Discounted expected spend over `time` months, like `lifetimes`.

        `freq` is the unit of frequency/recency/T (a month is 30 days, 4.345 weeks); the
        discount rate is per month and each month's purchases are discounted at its end.
        """
        index = frequency.index if isinstance(frequency, pd.Series) else None
        spend = self.conditional_expected_average_profit(frequency, monetary_value)
        factor = _CLV_MONTH_FACTOR[freq]
        x, tx, big_t = (np.asarray(v, dtype=float) for v in (frequency, recency, T))
        (ux, utx, ut), _, codes = _compress(*np.broadcast_arrays(x, tx, big_t))
        monthly = _discounted_monthly_purchases(
            transaction_prediction_model, ux, utx, ut, time, discount_rate, factor
        )
        return pd.Series(spend * monthly[codes], index=index, name="clv")


def _discounted_monthly_purchases(
    model: BetaGeoModel,
    x: np.ndarray,
    tx: np.ndarray,
    big_t: np.ndarray,
    months: int,
    monthly_discount_rate: float,
    units_per_month: float,
) -> np.ndarray:
    """Sum over months k of E[purchases in month k] / (1 + d)^k."""
    total = np.zeros_like(x)
    previous = np.zeros_like(x)
    for month in range(1, months + 1):
        cumulative = model.conditional_expected_number_of_purchases_up_to_time(
            month * units_per_month, x, tx, big_t
        )
        total += (cumulative - previous) / (1 + monthly_discount_rate) ** month
        previous = cumulative
    return total


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
    """
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

    spend, spend_meta = _predict_spend(x, m, repeat)
    metadata.update(spend_meta)

    heuristic = _heuristic_scores(
        x, tx, big_t, active, horizon_days, ltv_months, monthly_discount_rate, spend
    )
    method = np.full(len(clean), "heuristic")
    scores = heuristic
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
        else:
            scores = {k: np.where(bad, heuristic[k], model_scores[k]) for k in model_scores}
            method = np.where(bad, "heuristic", model)
            if bad.any():
                logger.warning("%s could not score %d customers; used heuristics", label, bad.sum())
    if metadata["method"] == "heuristic":
        logger.info("Scoring with heuristics: %s", metadata["fallback_reason"])
    metadata["n_rows_heuristic"] = int((method == "heuristic").sum())

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
    metadata["score_seconds"] = round(_time.perf_counter() - started, 3)
    return result, metadata


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


def _predict_spend(
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
    # one pseudo-order at the population mean keeps one lucky order from dominating
    population_mean = float(m[paying].mean()) if n_paying else 0.0
    spend = (x * np.where(paying, m, 0.0) + population_mean) / (np.where(paying, x, 0.0) + 1)
    meta["spend_params"] = {"population_mean": population_mean}
    return spend, meta


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


def _heuristic_scores(
    x: np.ndarray,
    tx: np.ndarray,
    big_t: np.ndarray,
    active: np.ndarray,
    horizon_days: int,
    ltv_months: int,
    monthly_discount_rate: float,
    spend: np.ndarray,
) -> dict[str, np.ndarray]:
    """Rules of thumb for bases too small to fit: see docs/predictive.md#fallback-heuristics."""
    repeat = active & (x > 0)
    gaps = tx[repeat] / x[repeat]
    gaps = gaps[gaps > 0]
    pooled_gap = float(np.median(gaps)) if gaps.size else HEURISTIC_DEFAULT_GAP_DAYS
    pooled_gap = max(pooled_gap, 1.0)
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
