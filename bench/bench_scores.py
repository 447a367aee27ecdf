"""Fit + score time of the predictive scores (BG/NBD + Gamma-Gamma) on synthetic order logs.

    python bench/bench_scores.py --sizes 100000 1000000

Orders are simulated from a known BG/NBD process (gamma purchase rates, beta dropout) with
gamma-distributed order values, turned into an RFM summary with
`predictive.summary_data_from_transactions`, and scored with `predictive.score_customers`,
the same call the customer_metrics asset makes. Prints timings and recovered parameters.
"""

from __future__ import annotations

import argparse
import time
from datetime import date

import numpy as np
import pandas as pd

from crm_pipeline.analytics.predictive import score_customers, summary_data_from_transactions

AS_OF = date(2025, 6, 1)
TRUE_PARAMS = {"r": 0.8, "alpha": 60.0, "a": 0.8, "b": 2.5}


def simulate_orders(customers: int, seed: int) -> pd.DataFrame:
    """Transactions (customer_id, day, value) of a BG/NBD population over up to two years."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(TRUE_PARAMS["r"], 1 / TRUE_PARAMS["alpha"], customers)
    p = rng.beta(TRUE_PARAMS["a"], TRUE_PARAMS["b"], customers)
    spend = rng.gamma(4.0, 15.0, customers)
    first = rng.uniform(0, 730, customers)  # days before AS_OF of the first purchase
    ids, ages, values = [np.arange(customers)], [first], [spend * rng.gamma(6, 1 / 6, customers)]
    t = np.zeros(customers)
    alive = np.ones(customers, dtype=bool)
    while alive.any():
        t = t + rng.exponential(1 / np.maximum(lam, 1e-9))
        alive &= t < first
        idx = np.flatnonzero(alive)
        ids.append(idx)
        ages.append(first[idx] - t[idx])
        values.append(spend[idx] * rng.gamma(6, 1 / 6, idx.size))
        alive &= rng.random(customers) >= p  # drop out after each repeat purchase
    end = pd.Timestamp(AS_OF)
    age = np.concatenate(ages)
    return pd.DataFrame(
        {
            "customer_id": np.concatenate(ids),
            "created_at": end - pd.to_timedelta(age, unit="D"),
            "value": np.round(np.concatenate(values), 2),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"true BG/NBD params: {TRUE_PARAMS}")
    header = f"{'customers':>10} {'orders':>10} {'summary s':>10} {'fit+score s':>12} method"
    print(header)
    for size in args.sizes:
        orders = simulate_orders(size, args.seed)
        t0 = time.perf_counter()
        summary = summary_data_from_transactions(
            orders, "customer_id", "created_at", "value", observation_period_end=AS_OF
        ).reset_index()
        t1 = time.perf_counter()
        scores, meta = score_customers(summary, AS_OF)
        t2 = time.perf_counter()
        print(
            f"{size:>10,} {len(orders):>10,} {t1 - t0:>10.1f} {t2 - t1:>12.1f} {meta['method']}"
            f" (spend: {meta['spend_method']})"
        )
        params = {k: round(v, 3) for k, v in (meta.get("params") or {}).items()}
        print(f"{'':>10} fitted params: {params}")
        print(
            f"{'':>10} mean churn {scores.churn_probability.mean():.3f}, mean 90d purchases "
            f"{scores.predicted_purchases_90d.mean():.3f}, mean 12m LTV "
            f"{scores.predicted_ltv.mean():.2f}"
        )


if __name__ == "__main__":
    main()
