"""Stored predictive fits: touched customers scored with the stored fit get exactly the scores a
full run with that fit gives them; incremental runs do not refit (unless there is no usable fit)
and leave everyone else's scores alone."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_pipeline.analytics import predictive
from crm_pipeline.analytics.metrics import compute_metrics
from crm_pipeline.analytics.predictive import (
    ScoringFit,
    apply_scoring_fit,
    fit_scoring_model,
    score_customers,
)
from crm_pipeline.analytics.score_fits import FitPolicy, StoredFit
from crm_pipeline.analytics.scores import rfm_summary, write_scores
from crm_pipeline.changes.refresh import refresh_metrics
from crm_pipeline_tests.analytics.seed import AS_OF, seed_store

SCORES = ("churn_probability", "predicted_purchases_90d", "predicted_next_order_date",
          "predicted_ltv", "scoring_method")  # fmt: skip


@st.composite
def populations(draw: st.DrawFn) -> pd.DataFrame:
    """RFM summaries of 5-150 customers: one-time buyers, repeat buyers, non-buyers, garbage."""
    n = draw(st.integers(5, 150))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    big_t = rng.uniform(0, 700, n).round()
    frequency = np.where(rng.random(n) < 0.4, 0, rng.poisson(3, n)).astype(float)
    recency = np.where(frequency > 0, (big_t * rng.random(n)).round(), 0.0)
    value = np.where(frequency > 0, rng.gamma(3, 20, n).round(2), 0.0)
    n_orders = np.where(rng.random(n) < 0.1, 0, frequency + 1)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "frequency": frequency,
            "recency": recency,
            "T": big_t,
            "monetary_value": value,
            "n_orders": n_orders,
        }
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(summary=populations(), picks=st.data(), later=st.integers(0, 30))
def test_scoring_a_subset_with_a_stored_fit_equals_the_full_run(
    summary: pd.DataFrame, picks: st.DataObject, later: int
) -> None:
    as_of = date(2025, 6, 1)
    fit = fit_scoring_model(summary, as_of)
    # the fit as stored: through JSON and back
    stored = ScoringFit.from_dict(json.loads(json.dumps(fit.as_dict(), default=float)))
    assert stored == fit
    full, _ = score_customers(summary, as_of)
    assert_frames_equal(apply_scoring_fit(stored, summary, as_of)[0], full)

    # a later run over a few customers, with the same fit, gives them the full run's scores
    moved = summary.assign(T=summary["T"] + later)
    when = as_of + timedelta(days=later)
    everyone, _ = apply_scoring_fit(stored, moved, when)
    rows = picks.draw(st.lists(st.integers(0, len(summary) - 1), min_size=1, unique=True))
    some, _ = apply_scoring_fit(stored, moved.iloc[rows], when)
    assert_frames_equal(some, everyone.iloc[rows])


def assert_frames_equal(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        actual.reset_index(drop=True), expected.reset_index(drop=True), check_exact=True
    )


def test_a_stale_or_outgrown_fit_is_not_reused() -> None:
    summary = pd.DataFrame({"customer_id": ["a"], "frequency": [1.0], "recency": [5.0], "T": [9.0]})
    stored = StoredFit(1, AS_OF, AS_OF, 100, fit_scoring_model(summary, AS_OF.date()))
    policy = FitPolicy(max_age=timedelta(days=7), max_growth=0.2)
    assert stored.stale_reason(AS_OF + timedelta(days=6), 120, policy) is None
    assert stored.stale_reason(AS_OF - timedelta(days=6), 80, policy) is None
    assert "from this run's as_of" in str(
        stored.stale_reason(AS_OF + timedelta(days=8), 100, policy)
    )
    assert "grew" in str(stored.stale_reason(AS_OF, 121, policy))


# --------------------------------------------------------------------------------------------
# in the database


@pytest.fixture
def fit_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the model fits (every buyer's RFM row each)."""
    calls: list[int] = []
    real = predictive.fit_scoring_model

    def counting(summary: pd.DataFrame, *args: Any, **kwargs: Any) -> ScoringFit:
        calls.append(len(summary))
        return real(summary, *args, **kwargs)

    monkeypatch.setattr(predictive, "fit_scoring_model", counting)
    return calls


def scores_table(engine: sa.Engine) -> dict[str, tuple]:
    cols = ", ".join(SCORES)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT customer_id::text, {cols} FROM customer_metrics"))
        return {r[0]: tuple(r[1:]) for r in rows}


def fit_rows(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM predictive_model_fits ORDER BY fit_id")).all()


def add_order(engine: sa.Engine, customer_id: str, days_before: float, price: float) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orders (id, customer_id, source, external_id, created_at,"
                " financial_status, total_price, total_refunded)"
                " VALUES (:id, :cid, 'shopify', :ext, :at, 'paid', :price, 0)"
            ),
            {
                "id": str(uuid.uuid4()),
                "cid": customer_id,
                "ext": f"new-{uuid.uuid4()}",
                "at": AS_OF - timedelta(days=days_before),
                "price": price,
            },
        )


def test_incremental_refresh_reuses_the_fit_and_leaves_others_alone(
    clean_db: sa.Engine, fit_calls: list[int]
) -> None:
    store = seed_store(clean_db, customers=300, seed=5)
    full = refresh_metrics(clean_db, AS_OF, full=True)
    assert full.scores is not None and full.scores["fit"] == "fitted"
    assert len(fit_calls) == 1
    fits = fit_rows(clean_db)
    assert len(fits) == 1
    before = scores_table(clean_db)

    touched = store.customer_ids[:3]
    for n, cid in enumerate(touched):
        add_order(clean_db, cid, days_before=2 + n, price=40.0 + n)
    later = AS_OF + timedelta(hours=6)
    refreshed = refresh_metrics(clean_db, later)
    assert refreshed.scores is not None
    assert refreshed.scores["fit"] == "reused"
    assert refreshed.scores["fit_id"] == fits[0].fit_id
    assert refreshed.scores["fit_age_days"] == 0.25
    assert len(fit_calls) == 1 and fit_rows(clean_db) == fits

    after = scores_table(clean_db)
    assert {cid: v for cid, v in after.items() if cid not in touched} == {
        cid: v for cid, v in before.items() if cid not in touched
    }
    # a touched customer's RFM row is the one a full run reads for it ...
    everyone_rfm = rfm_summary(clean_db, later)
    assert_frames_equal(
        rfm_summary(clean_db, later, touched),
        everyone_rfm[everyone_rfm["customer_id"].isin(touched)],
    )
    # ... so scoring everyone with the same fit (a full run with it) rewrites nothing touched
    assert any(after[cid] != before[cid] for cid in touched)
    write_scores(clean_db, later, list(after))
    rescored = scores_table(clean_db)
    assert len(fit_calls) == 1
    assert {cid: rescored[cid] for cid in touched} == {cid: after[cid] for cid in touched}


def test_first_incremental_run_without_a_fit_fits_once(
    clean_db: sa.Engine, fit_calls: list[int]
) -> None:
    store = seed_store(clean_db, customers=200, seed=9)
    compute_metrics(clean_db, AS_OF)
    assert fit_rows(clean_db) == []
    meta = write_scores(clean_db, AS_OF, store.customer_ids[:2])
    assert meta["fit"] == "fitted" and meta["fit_reason"] == "no stored fit"
    assert len(fit_calls) == 1 and len(fit_rows(clean_db)) == 1
    assert fit_calls[0] == len(rfm_summary(clean_db, AS_OF))  # on every buyer, not the two

    meta = write_scores(clean_db, AS_OF, store.customer_ids[2:4])
    assert meta["fit"] == "reused" and len(fit_calls) == 1

    # too old for the policy: refit once, then reuse the new fit
    policy = FitPolicy(max_age=timedelta(days=1))
    meta = write_scores(clean_db, AS_OF + timedelta(days=2), store.customer_ids[:2], policy)
    assert meta["fit"] == "fitted" and len(fit_calls) == 2
    meta = write_scores(clean_db, AS_OF + timedelta(days=2), store.customer_ids[:2], policy)
    assert meta["fit"] == "reused" and len(fit_calls) == 2
