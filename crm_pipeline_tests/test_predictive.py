"""Tests for crm_pipeline.predictive: published CDNOW estimates, model properties, scoring."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

from crm_pipeline.predictive import (
    NEXT_ORDER_MAX_DAYS,
    SCORE_COLUMNS,
    BetaGeoModel,
    GammaGammaModel,
    InvalidSummaryError,
    ModifiedBetaGeoModel,
    NotFittedError,
    score_customers,
    summary_data_from_transactions,
)

CDNOW_PATH = Path(__file__).parent / "data" / "cdnow" / "CDNOW_sample.txt"
CALIBRATION_END = date(1997, 9, 30)

# Fader, Hardie & Lee (2005) and Fader & Hardie note 025, CDNOW sample, 39-week calibration.
PUBLISHED_BG_NBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_BG_NBD_LL = -9582.4
PUBLISHED_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "v": 15.44}
# MBG/NBD on the same data: BTYDplus (mbgcnbd with k = 1), also asserted by lifetimes'
# ModifiedBetaGeoFitter tests to 3 decimals. No published log-likelihood.
PUBLISHED_MBG_NBD = {"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614}
PUBLISHED_N_CUSTOMERS = 2357
PUBLISHED_N_REPEAT = 946


def _three_significant(value: float) -> str:
    return f"{value:.3g}"


@pytest.fixture(scope="module")
def cdnow_transactions() -> pd.DataFrame:
    frame = pd.read_csv(
        CDNOW_PATH,
        sep=r"\s+",
        header=None,
        names=["master_id", "customer_id", "date", "n_cds", "value"],
        dtype={"date": str},
    )
    frame["date"] = pd.to_datetime(frame["date"], format="%Y%m%d")
    return frame


@pytest.fixture(scope="module")
def cdnow_weeks(cdnow_transactions: pd.DataFrame) -> pd.DataFrame:
    return summary_data_from_transactions(
        cdnow_transactions, "customer_id", "date", "value", CALIBRATION_END, freq="W"
    )


@pytest.fixture(scope="module")
def cdnow_bgf(cdnow_weeks: pd.DataFrame) -> BetaGeoModel:
    return BetaGeoModel().fit(cdnow_weeks["frequency"], cdnow_weeks["recency"], cdnow_weeks["T"])


@pytest.fixture(scope="module")
def cdnow_mbgf(cdnow_weeks: pd.DataFrame) -> ModifiedBetaGeoModel:
    return ModifiedBetaGeoModel().fit(
        cdnow_weeks["frequency"], cdnow_weeks["recency"], cdnow_weeks["T"]
    )


@pytest.fixture(scope="module")
def cdnow_days(cdnow_transactions: pd.DataFrame) -> pd.DataFrame:
    summary = summary_data_from_transactions(
        cdnow_transactions, "customer_id", "date", "value", CALIBRATION_END, freq="D"
    )
    return summary.reset_index()


# -- published CDNOW estimates ---------------------------------------------------------------


def test_cdnow_summary_has_published_counts(cdnow_weeks: pd.DataFrame) -> None:
    assert len(cdnow_weeks) == PUBLISHED_N_CUSTOMERS
    assert int((cdnow_weeks["frequency"] > 0).sum()) == PUBLISHED_N_REPEAT
    assert (cdnow_weeks["recency"] <= cdnow_weeks["T"]).all()
    # everyone's first purchase is in Q1 1997, so T spans 26 to 39 weeks
    assert cdnow_weeks["T"].between(26, 39).all()


def test_bg_nbd_reproduces_published_cdnow_estimates(cdnow_bgf: BetaGeoModel) -> None:
    for name, published in PUBLISHED_BG_NBD.items():
        assert _three_significant(cdnow_bgf.params_[name]) == _three_significant(published), name
    assert cdnow_bgf.log_likelihood_ == pytest.approx(PUBLISHED_BG_NBD_LL, abs=0.05)


def test_mbg_nbd_reproduces_published_cdnow_estimates(
    cdnow_mbgf: ModifiedBetaGeoModel, cdnow_bgf: BetaGeoModel
) -> None:
    for name, published in PUBLISHED_MBG_NBD.items():
        assert cdnow_mbgf.params_[name] == pytest.approx(published, abs=5e-4), name
    # one extra drop-out chance, same number of parameters: fits CDNOW as well as BG/NBD
    assert cdnow_mbgf.log_likelihood_ == pytest.approx(-9582.14, abs=0.05)
    assert cdnow_mbgf.log_likelihood_ >= cdnow_bgf.log_likelihood_


def test_gamma_gamma_reproduces_published_cdnow_estimates(cdnow_weeks: pd.DataFrame) -> None:
    repeat = cdnow_weeks[cdnow_weeks["frequency"] > 0]
    ggf = GammaGammaModel().fit(repeat["frequency"], repeat["monetary_value"])
    for name, published in PUBLISHED_GAMMA_GAMMA.items():
        assert _three_significant(ggf.params_[name]) == _three_significant(published), name


def test_bg_nbd_is_invariant_to_the_time_unit(cdnow_weeks, cdnow_bgf: BetaGeoModel) -> None:
    days = BetaGeoModel().fit(
        cdnow_weeks["frequency"], cdnow_weeks["recency"] * 7, cdnow_weeks["T"] * 7
    )
    assert days.params_["alpha"] == pytest.approx(cdnow_bgf.params_["alpha"] * 7, rel=1e-4)
    for name in ("r", "a", "b"):
        assert days.params_[name] == pytest.approx(cdnow_bgf.params_[name], rel=1e-4)


def test_mbg_nbd_is_invariant_to_the_time_unit(
    cdnow_weeks, cdnow_mbgf: ModifiedBetaGeoModel
) -> None:
    days = ModifiedBetaGeoModel().fit(
        cdnow_weeks["frequency"], cdnow_weeks["recency"] * 7, cdnow_weeks["T"] * 7
    )
    assert days.params_["alpha"] == pytest.approx(cdnow_mbgf.params_["alpha"] * 7, rel=1e-4)
    for name in ("r", "a", "b"):
        assert days.params_[name] == pytest.approx(cdnow_mbgf.params_[name], rel=1e-4)


@pytest.mark.parametrize("model_class", [BetaGeoModel, ModifiedBetaGeoModel])
def test_weights_equal_repeated_rows(model_class: type[BetaGeoModel]) -> None:
    x, tx, big_t = np.array([0, 1, 3, 2, 5]), np.array([0, 4, 20, 9, 30]), np.full(5, 40)
    counts = np.array([40, 15, 6, 9, 3])
    weighted = model_class().fit(x, tx, big_t, weights=counts)
    repeated = model_class().fit(*(np.repeat(v, counts) for v in (x, tx, big_t)))
    for name in model_class.param_names:
        assert weighted.params_[name] == pytest.approx(repeated.params_[name], rel=1e-4)


# -- model properties --------------------------------------------------------------------------


def test_probability_alive_is_a_probability_and_one_for_one_time_buyers(
    cdnow_weeks, cdnow_bgf: BetaGeoModel
) -> None:
    p_alive = cdnow_bgf.conditional_probability_alive(
        cdnow_weeks["frequency"], cdnow_weeks["recency"], cdnow_weeks["T"]
    )
    assert np.all((p_alive >= 0) & (p_alive <= 1))
    assert np.all(p_alive[cdnow_weeks["frequency"].to_numpy() == 0] == 1)


def test_probability_alive_rises_with_recency_and_falls_with_silence(
    cdnow_bgf: BetaGeoModel,
) -> None:
    recency = np.linspace(1, 39, 20)
    by_recency = cdnow_bgf.conditional_probability_alive(3, recency, 39)
    assert np.all(np.diff(by_recency) > 0)
    observed_for = np.linspace(20, 80, 20)
    by_silence = cdnow_bgf.conditional_probability_alive(3, 20, observed_for)
    assert np.all(np.diff(by_silence) < 0)


def test_expected_purchases_grow_with_t_and_start_at_zero(cdnow_bgf: BetaGeoModel) -> None:
    t = np.linspace(0, 200, 50)
    for x, tx in [(0, 0), (1, 10), (7, 35)]:
        expected = cdnow_bgf.conditional_expected_number_of_purchases_up_to_time(t, x, tx, 39)
        assert expected[0] == 0
        assert np.all(np.diff(expected) > 0)
    unconditional = cdnow_bgf.expected_number_of_purchases_up_to_time(t)
    assert np.all(np.diff(unconditional) > 0)


def test_expected_purchases_match_fhl_closed_form(cdnow_weeks, cdnow_bgf: BetaGeoModel) -> None:
    """The Euler-transformed hypergeometric must agree with FHL (2005) eq. 10 as printed."""
    r, alpha, a, b = (cdnow_bgf.params_[k] for k in ("r", "alpha", "a", "b"))
    x, tx, big_t = (cdnow_weeks[c].to_numpy() for c in ("frequency", "recency", "T"))
    t = 39.0
    z = t / (alpha + big_t + t)
    tail = ((alpha + big_t) / (alpha + big_t + t)) ** (r + x)
    numerator = (
        (a + b + x - 1) / (a - 1) * (1 - tail * special.hyp2f1(r + x, b + x, a + b + x - 1, z))
    )
    denominator = 1 + (x > 0) * a / (b + x - 1) * ((alpha + big_t) / (alpha + tx)) ** (r + x)
    expected = cdnow_bgf.conditional_expected_number_of_purchases_up_to_time(t, x, tx, big_t)
    np.testing.assert_allclose(expected, numerator / denominator, rtol=1e-9)


def test_heavy_buyers_get_finite_predictions(cdnow_bgf: BetaGeoModel) -> None:
    x = np.array([50.0, 300.0, 2000.0])
    # bought at T: the direct form of FHL eq. 10 overflows here
    expected = cdnow_bgf.conditional_expected_number_of_purchases_up_to_time(52, x, 39, 39)
    assert np.all(np.isfinite(expected))
    assert np.all(np.diff(expected) > 0)


def test_purchase_probability_is_bounded_and_inverted_exactly(cdnow_bgf: BetaGeoModel) -> None:
    t = np.linspace(0, 300, 60)
    x, tx, big_t = 4, 36, 39
    probability = cdnow_bgf.conditional_probability_of_purchase_up_to_time(t, x, tx, big_t)
    expected = cdnow_bgf.conditional_expected_number_of_purchases_up_to_time(t, x, tx, big_t)
    p_alive = cdnow_bgf.conditional_probability_alive(x, tx, big_t)
    assert np.all(np.diff(probability) > 0)
    assert np.all(probability <= p_alive)
    # P(X >= 1) <= E[X] (Markov); would fail if the probability formula were wrong
    assert np.all(probability <= expected + 1e-12)
    t_half = cdnow_bgf.time_to_purchase_probability(0.5, x, tx, big_t)
    assert cdnow_bgf.conditional_probability_of_purchase_up_to_time(
        t_half, x, tx, big_t
    ) == pytest.approx(0.5)


def test_purchase_probability_never_reaches_half_when_probably_dead(
    cdnow_bgf: BetaGeoModel,
) -> None:
    x, tx, big_t = 1, 1, 39
    assert cdnow_bgf.conditional_probability_alive(x, tx, big_t) < 0.5
    assert np.isinf(cdnow_bgf.time_to_purchase_probability(0.5, x, tx, big_t))


# -- MBG/NBD properties ------------------------------------------------------------------------


def test_mbg_nbd_gradient_matches_finite_differences(cdnow_weeks: pd.DataFrame) -> None:
    x, tx, big_t = (cdnow_weeks[c].to_numpy() for c in ("frequency", "recency", "T"))
    log_params = np.log([0.4, 5.0, 0.8, 2.0])

    def total(lp: np.ndarray) -> float:
        return float(ModifiedBetaGeoModel._log_likelihood_terms(lp, x, tx, big_t)[0].sum())

    _, gradient = ModifiedBetaGeoModel._log_likelihood_terms(log_params, x, tx, big_t)
    step = 1e-6
    numeric = [
        (total(log_params + step * e) - total(log_params - step * e)) / (2 * step)
        for e in np.eye(4)
    ]
    np.testing.assert_allclose(gradient.sum(axis=1), numeric, rtol=1e-5)


def test_mbg_nbd_probability_alive_is_a_probability_below_one_for_one_time_buyers(
    cdnow_weeks, cdnow_mbgf: ModifiedBetaGeoModel
) -> None:
    rfm = (cdnow_weeks["frequency"], cdnow_weeks["recency"], cdnow_weeks["T"])
    p_alive = cdnow_mbgf.conditional_probability_alive(*rfm)
    assert np.all((p_alive > 0) & (p_alive < 1))
    x, tx, big_t = np.meshgrid(np.arange(0, 100, 10), np.arange(0, 100, 10), [0, 50, 100, 1e4])
    tx = np.where(x == 0, 0, np.minimum(tx, big_t))
    grid = cdnow_mbgf.conditional_probability_alive(x, tx, big_t)
    assert np.all((grid >= 0) & (grid <= 1))
    # a one-time buyer seen at T = 0 has only survived the first drop-out chance
    r, alpha, a, b = (cdnow_mbgf.params_[k] for k in ("r", "alpha", "a", "b"))
    assert cdnow_mbgf.conditional_probability_alive(0, 0, 0) == pytest.approx(b / (a + b))


def test_mbg_nbd_one_time_buyers_fade_with_time(cdnow_mbgf: ModifiedBetaGeoModel) -> None:
    age = np.linspace(0, 200, 41)
    p_alive = cdnow_mbgf.conditional_probability_alive(0, 0, age)
    assert np.all(np.diff(p_alive) < 0)
    assert p_alive[-1] < 0.5 * p_alive[0]
    # silence hurts repeat buyers too, and a recent purchase helps
    assert np.all(np.diff(cdnow_mbgf.conditional_probability_alive(3, 20, age[age >= 20])) < 0)
    assert np.all(np.diff(cdnow_mbgf.conditional_probability_alive(3, np.linspace(1, 39), 39)) > 0)


def test_mbg_nbd_expected_purchases_grow_with_t_and_start_at_zero(
    cdnow_mbgf: ModifiedBetaGeoModel,
) -> None:
    t = np.linspace(0, 200, 50)
    for x, tx in [(0, 0), (1, 10), (7, 35)]:
        expected = cdnow_mbgf.conditional_expected_number_of_purchases_up_to_time(t, x, tx, 39)
        assert expected[0] == 0
        assert np.all(np.diff(expected) > 0)
    assert np.all(np.diff(cdnow_mbgf.expected_number_of_purchases_up_to_time(t)) > 0)
    heavy = cdnow_mbgf.conditional_expected_number_of_purchases_up_to_time(
        52, np.array([50.0, 300.0, 2000.0]), 39, 39
    )
    assert np.all(np.isfinite(heavy)) and np.all(np.diff(heavy) > 0)


def test_mbg_nbd_expectations_match_printed_closed_forms(
    cdnow_weeks, cdnow_mbgf: ModifiedBetaGeoModel
) -> None:
    """Batislam et al. (2007) as implemented by lifetimes.ModifiedBetaGeoFitter."""
    r, alpha, a, b = (cdnow_mbgf.params_[k] for k in ("r", "alpha", "a", "b"))
    x, tx, big_t = (cdnow_weeks[c].to_numpy() for c in ("frequency", "recency", "T"))
    t = 39.0
    hyp = special.hyp2f1(r + x, b + x + 1, a + b + x, t / (alpha + big_t + t))
    numerator = (
        (a + b + x) / (a - 1) * (1 - hyp * ((alpha + big_t) / (alpha + t + big_t)) ** (r + x))
    )
    denominator = 1 + a / (b + x) * ((alpha + big_t) / (alpha + tx)) ** (r + x)
    expected = cdnow_mbgf.conditional_expected_number_of_purchases_up_to_time(t, x, tx, big_t)
    np.testing.assert_allclose(expected, numerator / denominator, rtol=1e-9)

    times = np.array([0.1429, 1.0, 3.0, 31.8571, 32.0, 78.0])
    hyp = special.hyp2f1(r, b + 1, a + b, times / (alpha + times))
    unconditional = b / (a - 1) * (1 - hyp * (alpha / (alpha + times)) ** r)
    np.testing.assert_allclose(
        cdnow_mbgf.expected_number_of_purchases_up_to_time(times), unconditional, rtol=1e-9
    )


@pytest.mark.parametrize("x, tx", [(0, 0), (4, 36)])
def test_mbg_nbd_purchase_probability_is_bounded_and_inverted_exactly(
    cdnow_mbgf: ModifiedBetaGeoModel, x: int, tx: int
) -> None:
    t = np.linspace(0, 300, 60)
    big_t = 39
    probability = cdnow_mbgf.conditional_probability_of_purchase_up_to_time(t, x, tx, big_t)
    expected = cdnow_mbgf.conditional_expected_number_of_purchases_up_to_time(t, x, tx, big_t)
    p_alive = cdnow_mbgf.conditional_probability_alive(x, tx, big_t)
    assert np.all(np.diff(probability) > 0)
    assert np.all(probability <= p_alive)
    assert np.all(probability <= expected + 1e-12)
    target = 0.5 * p_alive
    t_half = cdnow_mbgf.time_to_purchase_probability(target, x, tx, big_t)
    assert cdnow_mbgf.conditional_probability_of_purchase_up_to_time(
        t_half, x, tx, big_t
    ) == pytest.approx(target)


def test_gamma_gamma_shrinks_towards_population_mean(cdnow_weeks: pd.DataFrame) -> None:
    repeat = cdnow_weeks[cdnow_weeks["frequency"] > 0]
    ggf = GammaGammaModel().fit(repeat["frequency"], repeat["monetary_value"])
    p, q, v = (ggf.params_[k] for k in ("p", "q", "v"))
    population = p * v / (q - 1)
    spend = ggf.conditional_expected_average_profit(repeat["frequency"], repeat["monetary_value"])
    low = np.minimum(repeat["monetary_value"], population)
    high = np.maximum(repeat["monetary_value"], population)
    assert np.all((spend >= low - 1e-9) & (spend <= high + 1e-9))
    # more purchases at the same mean -> closer to the customer's own mean
    far = 3 * population
    by_frequency = ggf.conditional_expected_average_profit(np.array([1, 5, 25]), far)
    assert np.all(np.diff(by_frequency) > 0)


def test_customer_lifetime_value_grows_with_horizon_and_shrinks_with_discount(
    cdnow_weeks, cdnow_bgf: BetaGeoModel
) -> None:
    repeat = cdnow_weeks[cdnow_weeks["frequency"] > 0]
    ggf = GammaGammaModel().fit(repeat["frequency"], repeat["monetary_value"])
    args = (cdnow_bgf, *(cdnow_weeks[c] for c in ("frequency", "recency", "T", "monetary_value")))
    base = ggf.customer_lifetime_value(*args, time=12, discount_rate=0.01, freq="W")
    longer = ggf.customer_lifetime_value(*args, time=24, discount_rate=0.01, freq="W")
    dearer = ggf.customer_lifetime_value(*args, time=12, discount_rate=0.05, freq="W")
    assert base.index.equals(cdnow_weeks.index)
    assert (base > 0).all()
    assert (longer > base).all()
    assert (dearer < base).all()


def test_invalid_inputs_and_unfitted_models_raise() -> None:
    with pytest.raises(InvalidSummaryError):
        BetaGeoModel().fit([1, 2], [10, 50], [20, 40])
    with pytest.raises(InvalidSummaryError):
        GammaGammaModel().fit([0, 2], [10.0, 12.0])
    with pytest.raises(NotFittedError):
        BetaGeoModel().conditional_probability_alive(1, 1, 2)
    with pytest.raises(NotFittedError):
        ModifiedBetaGeoModel().conditional_probability_alive(1, 1, 2)


# -- transactions -> summary -------------------------------------------------------------------


def test_summary_aggregates_days_and_excludes_first_purchase() -> None:
    transactions = pd.DataFrame(
        {
            "customer": ["a", "a", "a", "a", "b", "c", "c"],
            "at": [
                "2024-01-01 09:00",
                "2024-01-01 18:00",  # same day as the first purchase: merged, not a repeat
                "2024-01-08 10:00",
                "2024-01-08 11:00",  # merged into one repeat day worth 30
                "2024-01-05 12:00",
                "2024-01-03 12:00",
                "2024-02-01 12:00",  # after the observation end: ignored
            ],
            "value": [5.0, 5.0, 10.0, 20.0, 7.0, 4.0, 99.0],
        }
    )
    summary = summary_data_from_transactions(
        transactions, "customer", "at", "value", observation_period_end="2024-01-15", freq="D"
    )
    assert summary.loc["a"].tolist() == [1.0, 7.0, 14.0, 30.0]
    assert summary.loc["b"].tolist() == [0.0, 0.0, 10.0, 0.0]
    assert summary.loc["c"].tolist() == [0.0, 0.0, 12.0, 0.0]
    weeks = summary_data_from_transactions(
        transactions, "customer", "at", None, observation_period_end="2024-01-15", freq="W"
    )
    assert weeks.loc["a", "T"] == pytest.approx(2.0)
    assert "monetary_value" not in weeks.columns


# -- pipeline scoring --------------------------------------------------------------------------


def _assert_clean_scores(scores: pd.DataFrame, as_of: date) -> None:
    assert list(scores.columns) == SCORE_COLUMNS
    numeric = scores[["churn_probability", "predicted_purchases_90d", "predicted_ltv"]]
    assert np.isfinite(numeric.to_numpy()).all()
    assert scores["churn_probability"].between(0, 1).all()
    assert (scores["predicted_purchases_90d"] >= 0).all()
    assert (scores["predicted_ltv"] >= 0).all()
    dates = scores["predicted_next_order_date"].dropna()
    assert all(as_of <= d <= as_of + timedelta(days=NEXT_ORDER_MAX_DAYS) for d in dates)
    assert set(scores["scoring_method"]) <= {"mbg_nbd", "bg_nbd", "heuristic"}


@pytest.mark.parametrize(
    "model, published", [("mbg_nbd", PUBLISHED_MBG_NBD), ("bg_nbd", PUBLISHED_BG_NBD)]
)
def test_score_customers_on_cdnow_uses_the_model(
    cdnow_days: pd.DataFrame, model: str, published: dict[str, float]
) -> None:
    kwargs = {} if model == "mbg_nbd" else {"model": model}  # MBG/NBD is the default
    scores, metadata = score_customers(cdnow_days, as_of=CALIBRATION_END, **kwargs)
    _assert_clean_scores(scores, CALIBRATION_END)
    assert metadata["model"] == model
    assert metadata["method"] == model
    assert metadata["fallback_reason"] is None
    assert metadata["spend_method"] == "gamma_gamma"
    assert metadata["n_customers"] == PUBLISHED_N_CUSTOMERS
    assert metadata["n_repeat"] == PUBLISHED_N_REPEAT
    assert (scores["scoring_method"] == model).all()
    # same r, a, b as the weekly fit: the days-based pipeline fits the same model
    for name in ("r", "a", "b"):
        assert _three_significant(metadata["params"][name]) == _three_significant(published[name])


def test_score_customers_rejects_unknown_models(cdnow_days: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="model"):
        score_customers(cdnow_days, as_of=CALIBRATION_END, model="pareto_nbd")  # type: ignore[arg-type]


def test_one_time_buyers_churn_more_the_longer_ago_they_bought(cdnow_days: pd.DataFrame) -> None:
    scores, metadata = score_customers(cdnow_days, as_of=CALIBRATION_END)
    assert metadata["method"] == "mbg_nbd"
    one_time = (cdnow_days["frequency"] == 0).to_numpy()
    churn = scores["churn_probability"].to_numpy()[one_time]
    age = cdnow_days["T"].to_numpy()[one_time]
    assert (churn > 0).all()
    assert len(np.unique(churn)) > 1
    # churn depends only on T for one-time buyers: strictly increasing in it
    order = np.argsort(age)
    distinct = np.r_[True, np.diff(age[order]) > 0]
    assert np.all(np.diff(churn[order][distinct]) > 0)
    oldest, newest = age >= np.quantile(age, 0.75), age <= np.quantile(age, 0.25)
    assert churn[oldest].min() > churn[newest].max()

    # under BG/NBD every one-time buyer is certainly alive: the reason MBG/NBD is the default
    bg_scores, _ = score_customers(cdnow_days, as_of=CALIBRATION_END, model="bg_nbd")
    assert (bg_scores["churn_probability"].to_numpy()[one_time] == 0).all()


def _simulate_mbg_nbd(n: int, r: float, alpha: float, a: float, b: float, seed: int):
    """MBG/NBD customers aged up to two years (days): drop-out possible after every purchase."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(r, 1 / alpha, n)
    age = rng.uniform(1, 730, n)
    arrivals = rng.poisson(rate * age)
    repeats_before_dropout = rng.geometric(rng.beta(a, b, n)) - 1
    x = np.minimum(arrivals, repeats_before_dropout).astype(float)
    recency = np.where(x > 0, age * rng.beta(np.maximum(x, 1), np.maximum(arrivals - x + 1, 1)), 0)
    return pd.DataFrame({"customer_id": range(n), "frequency": x, "recency": recency, "T": age})


def test_one_time_buyers_churn_risk_in_a_simulated_store() -> None:
    """A store where most customers buy once: old one-time buyers must not look safe."""
    summary = _simulate_mbg_nbd(5000, r=0.5, alpha=60.0, a=1.2, b=2.0, seed=3)
    one_time = (summary["frequency"] == 0).to_numpy()
    assert one_time.mean() > 0.5
    as_of = date(2025, 1, 1)
    scores, metadata = score_customers(summary, as_of=as_of)
    _assert_clean_scores(scores, as_of)
    assert metadata["method"] == "mbg_nbd"
    churn = scores["churn_probability"].to_numpy()
    age = summary["T"].to_numpy()
    long_ago, recently = one_time & (age > 540), one_time & (age < 30)
    assert churn[long_ago].min() > churn[recently].max()
    assert churn[long_ago].mean() > 0.5
    for name, true in {"r": 0.5, "alpha": 60.0, "a": 1.2, "b": 2.0}.items():
        assert metadata["params"][name] == pytest.approx(true, rel=0.3), name


def test_next_order_date_is_the_first_day_with_even_odds(cdnow_days: pd.DataFrame) -> None:
    scores, metadata = score_customers(cdnow_days, as_of=CALIBRATION_END)
    model = ModifiedBetaGeoModel()
    model.params_ = metadata["params"]
    has_date = scores["predicted_next_order_date"].notna().to_numpy()
    # a date exists exactly for customers more likely alive than not (within three years)
    assert np.all(scores["churn_probability"].to_numpy()[has_date] < 0.5)
    rows = cdnow_days[has_date]
    days = np.array(
        [(d - CALIBRATION_END).days for d in scores["predicted_next_order_date"][has_date]]
    )
    rfm = (rows["frequency"], rows["recency"], rows["T"])
    at_date = model.conditional_probability_of_purchase_up_to_time(days, *rfm)
    day_before = model.conditional_probability_of_purchase_up_to_time(days - 1, *rfm)
    assert np.all(at_date >= 0.5)
    assert np.all(day_before < 0.5)


def test_score_customers_heuristic_for_small_base(cdnow_days: pd.DataFrame) -> None:
    small = cdnow_days.head(30)
    assert (small["frequency"] > 0).sum() < 20
    scores, metadata = score_customers(small, as_of=CALIBRATION_END)
    _assert_clean_scores(scores, CALIBRATION_END)
    assert metadata["method"] == "heuristic"
    assert "repeat customers" in metadata["fallback_reason"]
    assert (scores["scoring_method"] == "heuristic").all()


def test_heuristic_churn_rises_with_silence() -> None:
    silence = np.arange(0, 200, 20, dtype=float)
    summary = pd.DataFrame(
        {
            "customer_id": range(len(silence)),
            "frequency": 3.0,
            "recency": 200 - silence,
            "T": 200.0,
            "monetary_value": 25.0,
        }
    )
    scores, metadata = score_customers(summary, as_of=date(2025, 1, 1))
    assert metadata["method"] == "heuristic"
    assert np.all(np.diff(scores["churn_probability"]) > 0)
    assert np.all(np.diff(scores["predicted_purchases_90d"]) < 0)


@pytest.mark.parametrize("model, label", [("mbg_nbd", "MBG/NBD"), ("bg_nbd", "BG/NBD")])
def test_score_customers_falls_back_on_degenerate_fit(model: str, label: str) -> None:
    # 40 identical customers still buying at T: no information about drop-out at all
    summary = pd.DataFrame(
        {"customer_id": range(40), "frequency": 3.0, "recency": 100.0, "T": 100.0}
    )
    scores, metadata = score_customers(summary, as_of=date(2025, 1, 1), model=model)
    _assert_clean_scores(scores, date(2025, 1, 1))
    assert metadata["method"] == "heuristic"
    assert metadata["model"] == model
    assert metadata["fallback_reason"].startswith(label)
    assert (scores["scoring_method"] == "heuristic").all()


def test_score_customers_repairs_garbage_and_scores_zero_order_customers() -> None:
    summary = pd.DataFrame(
        {
            "customer_id": ["nan-t", "negative", "recency>T", "inf", "ok", "no-orders"],
            "frequency": [2.0, -3.0, 2.0, np.inf, 1.0, 4.0],
            "recency": [5.0, 2.0, 500.0, 3.0, 10.0, 20.0],
            "T": [np.nan, 30.0, 60.0, 40.0, 50.0, 60.0],
            "monetary_value": [10.0, 1.0, -5.0, 3.0, np.nan, 9.0],
            "n_orders": [3, 1, 3, 5, 2, 0],
        }
    )
    as_of = date(2025, 1, 1)
    scores, metadata = score_customers(summary, as_of=as_of)
    _assert_clean_scores(scores, as_of)
    zero_order = scores["customer_id"].isin(["nan-t", "inf", "no-orders"])
    assert metadata["n_zero_orders"] == 3
    assert metadata["n_repaired_rows"] == 3
    assert (scores.loc[zero_order, "churn_probability"] == 1).all()
    assert (scores.loc[zero_order, "predicted_purchases_90d"] == 0).all()
    assert (scores.loc[zero_order, "predicted_ltv"] == 0).all()
    assert scores.loc[zero_order, "predicted_next_order_date"].isna().all()


def test_score_customers_handles_an_empty_base() -> None:
    empty = pd.DataFrame(columns=["customer_id", "frequency", "recency", "T", "monetary_value"])
    scores, metadata = score_customers(empty, as_of=date(2025, 1, 1))
    assert list(scores.columns) == SCORE_COLUMNS
    assert scores.empty
    assert metadata["method"] == "heuristic"


def test_heuristic_regular_buyer_who_just_ordered() -> None:
    """Buying every `gap` days and just bought: h/gap purchases, even odds after gap*ln 2."""
    gap, n_gaps = 30.0, 4
    summary = pd.DataFrame(
        {
            "customer_id": range(5),
            "frequency": float(n_gaps),
            "recency": gap * n_gaps,
            "T": gap * n_gaps,
            "monetary_value": 40.0,
        }
    )
    as_of = date(2025, 1, 1)
    scores, metadata = score_customers(summary, as_of=as_of, horizon_days=90)
    assert metadata["method"] == "heuristic"
    assert scores["churn_probability"].to_numpy() == pytest.approx(0.0)
    assert scores["predicted_purchases_90d"].to_numpy() == pytest.approx(90 / gap)
    expected_date = as_of + timedelta(days=int(np.ceil(gap * np.log(2))))
    assert (scores["predicted_next_order_date"] == expected_date).all()
