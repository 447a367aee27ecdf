"""Stored predictive model fits: full recomputes save theirs, incremental runs reuse the latest.

Refitting MBG/NBD + Gamma-Gamma on the whole base costs a scan of every order plus an optimiser
run (about 0.3 s at 200 customers, seconds at 100k), which a refresh of a few touched customers
cannot afford. The fit's parameters change slowly with the base, so an incremental run scores
its customers with the latest stored fit and refits only when there is none, when it is older
than `CRM_SCORE_FIT_MAX_AGE_DAYS` (days between the fit's as_of and the run's), or when the
live customer base has grown by more than `CRM_SCORE_FIT_MAX_GROWTH` since (docs/predictive.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from crm_pipeline.analytics._db import Bind, as_utc, transaction

if TYPE_CHECKING:
    from crm_pipeline.analytics.predictive import ScoringFit

DEFAULT_MAX_AGE_DAYS = 7.0
DEFAULT_MAX_GROWTH = 0.2

_LIVE_CUSTOMERS = "SELECT count(*) FROM customers WHERE deleted_at IS NULL AND merged_into IS NULL"

_LATEST = """
SELECT fit_id, fitted_at, as_of, live_customers, fit
FROM predictive_model_fits ORDER BY fitted_at DESC, fit_id DESC LIMIT 1
"""

_INSERT = """
INSERT INTO predictive_model_fits (as_of, live_customers, buyers, method, spend_method, fit)
VALUES (:as_of, :live_customers, :buyers, :method, :spend_method, CAST(:fit AS jsonb))
RETURNING fit_id, fitted_at
"""


@dataclass(frozen=True)
class FitPolicy:
    """When a stored fit is too old or its base too different to score with."""

    max_age: timedelta = timedelta(days=DEFAULT_MAX_AGE_DAYS)
    max_growth: float = DEFAULT_MAX_GROWTH

    @classmethod
    def from_env(cls) -> FitPolicy:
        """`CRM_SCORE_FIT_MAX_AGE_DAYS` and `CRM_SCORE_FIT_MAX_GROWTH` (a share, 0.2 = 20%)."""
        age = os.environ.get("CRM_SCORE_FIT_MAX_AGE_DAYS", "").strip()
        growth = os.environ.get("CRM_SCORE_FIT_MAX_GROWTH", "").strip()
        return cls(
            max_age=timedelta(days=float(age)) if age else timedelta(days=DEFAULT_MAX_AGE_DAYS),
            max_growth=float(growth) if growth else DEFAULT_MAX_GROWTH,
        )


@dataclass(frozen=True)
class StoredFit:
    """A row of predictive_model_fits."""

    fit_id: int
    fitted_at: datetime
    as_of: datetime
    live_customers: int
    fit: ScoringFit

    def age(self, as_of: datetime) -> timedelta:
        """Observation time between the fit and a run at `as_of` (either direction)."""
        return abs(as_utc(as_of) - self.as_of)

    def stale_reason(self, as_of: datetime, live_customers: int, policy: FitPolicy) -> str | None:
        """Why this fit must not score a run at `as_of` over `live_customers`; None if usable."""
        if self.age(as_of) > policy.max_age:
            return f"fit {self.fit_id} is {self.age(as_of)} from this run's as_of"
        base = max(self.live_customers, 1)
        if (live_customers - self.live_customers) / base > policy.max_growth:
            return (
                f"base grew from {self.live_customers} to {live_customers} customers "
                f"since fit {self.fit_id}"
            )
        return None


def live_customer_count(bind: Bind) -> int:
    with transaction(bind) as conn:
        return int(conn.execute(sa.text(_LIVE_CUSTOMERS)).scalar_one())


def latest_fit(bind: Bind) -> StoredFit | None:
    """The most recently stored fit, or None before the first full recompute."""
    from crm_pipeline.analytics.predictive import ScoringFit

    with transaction(bind) as conn:
        row = conn.execute(sa.text(_LATEST)).mappings().first()
    if row is None:
        return None
    return StoredFit(
        fit_id=int(row["fit_id"]),
        fitted_at=row["fitted_at"],
        as_of=as_utc(row["as_of"]),
        live_customers=int(row["live_customers"]),
        fit=ScoringFit.from_dict(row["fit"]),
    )


def save_fit(bind: Bind, fit: ScoringFit, as_of: datetime, live_customers: int) -> StoredFit:
    """Record a fit made at `as_of` over a base of `live_customers`."""
    payload = json.dumps(fit.as_dict(), default=_plain)
    with transaction(bind) as conn:
        row = conn.execute(
            sa.text(_INSERT),
            {
                "as_of": as_utc(as_of),
                "live_customers": live_customers,
                "buyers": int(fit.metadata.get("n_customers", 0)),
                "method": fit.method,
                "spend_method": fit.spend_method,
                "fit": payload,
            },
        ).one()
    return StoredFit(int(row.fit_id), row.fitted_at, as_utc(as_of), live_customers, fit)


def _plain(value: Any) -> Any:
    """numpy scalars in the fit metadata as JSON numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
