"""The buy-till-you-die models: (M)BG/NBD for purchases, Gamma-Gamma for spend, with the
lifetimes-compatible API (fit, conditional_* predictions, customer_lifetime_value). Moved from
crm_pipeline/predictive.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Self

import numpy as np
import pandas as pd
from scipy import special

from crm_pipeline.analytics.predictive.fitting import (
    ArrayLike,
    InvalidSummaryError,
    ModelFitError,
    NotFittedError,
    _as_float_array,
    _check_converged,
    _compress,
    _minimize_log_params,
    _penalized_objective,
    _stable,
    _validate_rfm,
)

_CLV_MONTH_FACTOR = {"W": 4.345, "M": 1.0, "D": 30.0, "H": 30.0 * 24.0}


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
