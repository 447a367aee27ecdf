"""Buy-till-you-die models for customer scoring: (M)BG/NBD for purchases, Gamma-Gamma for spend.

The API follows the `lifetimes` package (`BetaGeoFitter`, `ModifiedBetaGeoFitter`,
`GammaGammaFitter`) so analysts can carry notebooks over; `score_customers` is the pipeline's
entry point and never raises on odd data: small or degenerate customer bases fall back to the
heuristics described in docs/predictive.md and say so in the returned metadata.

Inputs are RFM summaries: frequency = number of repeat purchase days, recency = time from first
to last purchase, T = time from first purchase to the end of observation, all in one time unit.

Modules: `fitting` (errors, input checks, the optimiser, the RFM summary), `models` (the models),
`scoring` (`score_customers`, or
`fit_scoring_model` then `apply_scoring_fit` to score a few customers with a stored fit).
The old path `crm_pipeline.predictive` re-exports this package.
"""

from crm_pipeline.analytics.predictive.fitting import (
    ArrayLike,
    InvalidSummaryError,
    ModelFitError,
    NotFittedError,
    PredictiveModelError,
    summary_data_from_transactions,
)
from crm_pipeline.analytics.predictive.models import (
    BetaGeoModel,
    GammaGammaModel,
    ModifiedBetaGeoModel,
)
from crm_pipeline.analytics.predictive.scoring import (
    DAYS_PER_MONTH,
    HEURISTIC_DEFAULT_GAP_DAYS,
    HEURISTIC_SILENCE_GAPS,
    MAX_UNSCORABLE_SHARE,
    MIN_REPEAT_CUSTOMERS,
    NEXT_ORDER_MAX_DAYS,
    NEXT_ORDER_PROBABILITY,
    PURCHASE_MODELS,
    RFM_COLUMNS,
    SCORE_COLUMNS,
    ModelName,
    ScoringFit,
    apply_scoring_fit,
    fit_scoring_model,
    score_customers,
)

__all__ = [
    "DAYS_PER_MONTH",
    "HEURISTIC_DEFAULT_GAP_DAYS",
    "HEURISTIC_SILENCE_GAPS",
    "MAX_UNSCORABLE_SHARE",
    "MIN_REPEAT_CUSTOMERS",
    "NEXT_ORDER_MAX_DAYS",
    "NEXT_ORDER_PROBABILITY",
    "PURCHASE_MODELS",
    "RFM_COLUMNS",
    "SCORE_COLUMNS",
    "ArrayLike",
    "BetaGeoModel",
    "GammaGammaModel",
    "InvalidSummaryError",
    "ModelFitError",
    "ModelName",
    "ModifiedBetaGeoModel",
    "NotFittedError",
    "PredictiveModelError",
    "ScoringFit",
    "apply_scoring_fit",
    "fit_scoring_model",
    "score_customers",
    "summary_data_from_transactions",
]
