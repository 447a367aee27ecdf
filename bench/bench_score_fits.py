"""refresh_touched of a few touched customers: refitting the predictive models vs the stored fit.

    python bench/bench_score_fits.py [--sizes 5000 20000] [--touched 10] [--rounds 5]

For each size, starts a throwaway embedded PostgreSQL (migrated) and the Firestore emulator,
seeds a random store (the analytics tests' generator: orders, line items, activities), runs a
full metrics + segments refresh (which fits and stores the model), marks the mirror as caught
up, then alternates rounds of: add an order to `--touched` random customers, time
`refresh_touched` (metrics, scores, segments, mirror of those customers). "refit" rounds set
CRM_SCORE_FIT_MAX_AGE_DAYS=0, so every run refits on the whole base (the behaviour before the
stored fit); "stored" rounds score the touched customers with the stored fit. Prints medians
and the ratio refit / stored, and each stage's median (metrics + scores, segments, mirror).
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import crm_pipeline.changes.refresh as refresh_module  # noqa: E402
from crm_pipeline.changes.log import MIRROR, advance, lock_consumer, read_window  # noqa: E402
from crm_pipeline.changes.refresh import (  # noqa: E402
    refresh_metrics,
    refresh_segment_assignments,
    refresh_touched,
)
from crm_pipeline.db.engine import make_engine  # noqa: E402
from crm_pipeline.db.migrate import migrate  # noqa: E402
from crm_pipeline.db.server import EmbeddedPostgres  # noqa: E402
from crm_pipeline.firestore.emulator import FirestoreEmulator  # noqa: E402
from crm_pipeline_tests.analytics.seed import seed_store  # noqa: E402

PROJECT = "bench-score-fits"
STAGES = ("refresh_metrics", "refresh_segment_assignments", "refresh_mirror")
#: seconds of each stage of the last refresh_touched call
stage_seconds: dict[str, float] = {}


def timed_stages() -> None:
    """Wrap refresh_touched's stages so each round reports where its time went."""
    for name in STAGES:
        real = getattr(refresh_module, name)

        @functools.wraps(real)
        def wrapper(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _real(*args, **kwargs)
            finally:
                stage_seconds[_name] = time.perf_counter() - started

        setattr(refresh_module, name, wrapper)


def touch(engine: sa.Engine, ids: list[str]) -> None:
    """A new paid order for each customer: the change log records them."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orders (id, customer_id, source, external_id, created_at,"
                " financial_status, total_price, total_refunded)"
                " VALUES (:id, :cid, 'shopify', :ext, :at, 'paid', :price, 0)"
            ),
            [
                {
                    "id": str(uuid.uuid4()),
                    "cid": cid,
                    "ext": f"bench-{uuid.uuid4()}",
                    "at": now - timedelta(minutes=5),
                    "price": 50.0,
                }
                for cid in ids
            ],
        )


def mirror_caught_up(engine: sa.Engine) -> None:
    """Skip the first mirror sync of everyone: the rounds measure the touched customers only."""
    with engine.begin() as conn:
        lock_consumer(conn, MIRROR)
        advance(conn, read_window(conn, MIRROR, with_ids=False), 0)


def bench_size(customers: int, touched: int, rounds: int, client: object, dsn: str) -> None:
    engine = make_engine(dsn)
    started = time.perf_counter()
    store = seed_store(engine, customers=customers, seed=customers)
    with engine.connect() as conn:
        # planner statistics, as autovacuum keeps them on a live database
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
    seeded = time.perf_counter() - started
    started = time.perf_counter()
    full = refresh_metrics(engine, full=True)
    refresh_segment_assignments(engine, full.as_of, full=True)
    mirror_caught_up(engine)
    print(
        f"\n{customers:,} customers: seeded in {seeded:.1f} s, full metrics + scores + segments "
        f"{time.perf_counter() - started:.1f} s (fit {full.scores and full.scores.get('fit')})"
    )
    rng = random.Random(customers)
    times: dict[str, list[float]] = {"refit": [], "stored": []}
    stages: dict[str, dict[str, list[float]]] = {m: {s: [] for s in STAGES} for m in times}
    fits: dict[str, set[str]] = {"refit": set(), "stored": set()}
    for n in range(2 * rounds):
        mode = "refit" if n % 2 == 0 else "stored"
        os.environ["CRM_SCORE_FIT_MAX_AGE_DAYS"] = "0" if mode == "refit" else "7"
        touch(engine, rng.sample(store.customer_ids, touched))
        started = time.perf_counter()
        summary = refresh_touched(
            engine,
            client,
            None,
            run_id=f"bench-{n}",
            dashboard=False,  # type: ignore[arg-type]
        )
        times[mode].append(time.perf_counter() - started)
        for stage in STAGES:
            stages[mode][stage].append(stage_seconds[stage])
        scores = summary.metrics.scores or {}
        fits[mode].add(str(scores.get("fit")))
    os.environ.pop("CRM_SCORE_FIT_MAX_AGE_DAYS", None)
    refit, stored = statistics.median(times["refit"]), statistics.median(times["stored"])
    print(f"  refresh_touched, {touched} touched, median of {rounds} rounds each:")
    print(f"    refit on the whole base  {refit * 1000:8.1f} ms  (fit: {sorted(fits['refit'])})")
    print(f"    stored fit               {stored * 1000:8.1f} ms  (fit: {sorted(fits['stored'])})")
    print(f"    refit / stored           x{refit / stored:.1f}")
    for mode in times:
        parts = ", ".join(
            f"{stage.removeprefix('refresh_')} {statistics.median(v) * 1000:.0f} ms"
            for stage, v in stages[mode].items()
        )
        print(f"    {mode:6s} stages: {parts}")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--touched", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    timed_stages()
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    for customers in args.sizes:
        work = Path(tempfile.mkdtemp(prefix="crm-bench-fits-", dir="/tmp"))
        server = EmbeddedPostgres(work / "pg")
        emulator = FirestoreEmulator(work / "firestore", project=PROJECT)
        try:
            dsn = server.start()
            migrate(dsn)
            os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.start()
            client = firestore.Client(project=PROJECT, credentials=AnonymousCredentials())
            bench_size(customers, args.touched, args.rounds, client, dsn)
        finally:
            emulator.stop()
            server.stop()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
