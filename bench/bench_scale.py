"""The cost curve (issue 16 item 6): seconds per stage at several store sizes, and their ratios.

For each size, on a fresh embedded PostgreSQL, Firestore emulator (heap sized for the store) and
sandbox Shopify/Klaviyo API (Klaviyo's rate windows off: this measures the pipeline, not the
vendor's limits), runs in process:

1. `full_refresh` with the Klaviyo sync on (wall; its mirror check shown apart: a verification
   step, full up to `FirestoreResource.full_check_max_customers` live customers, sampled past it);
2. `incremental_sync` after 1% of the customers changed in the sandbox, as a share of (1);
3. `process_webhooks` with `--deliveries` staff-action deliveries waiting;
4. metrics: a full recompute of metrics and scores (`refresh_metrics(full=True)`);
5. mirror: the first sync of every customer's documents (the `firestore_customer_mirror` step
   of (1));
6. `recompute_bucketed` with `--buckets` buckets, in process (the same work as 4 + segments + 5,
   split by customer hash).

Then the ratio of each stage between consecutive sizes beside the ratio of the sizes (linear
growth: stage ratio <= size ratio x 1.1), with the 1-minute load average after each stage (the
machine may be shared) and the steps of the full and incremental runs. Machinery from
bench_incremental.py.

    python bench/bench_scale.py --sizes 10000 100000 [--deliveries 10000] [--buckets 4]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_incremental import (  # noqa: E402
    CHECK,
    land_staff_actions,
    print_steps,
    run_job,
    store_for,
)

from crm_pipeline.changes.refresh import refresh_metrics  # noqa: E402
from crm_pipeline.db.engine import make_engine  # noqa: E402
from crm_pipeline.db.migrate import migrate  # noqa: E402
from crm_pipeline.db.server import EmbeddedPostgres  # noqa: E402
from crm_pipeline.defs.pipeline.bucketed import bucketed_job  # noqa: E402
from crm_pipeline.defs.resources import resources  # noqa: E402
from crm_pipeline.firestore.emulator import FirestoreEmulator, heap_for  # noqa: E402
from crm_pipeline.sandbox.generate import mutate_store  # noqa: E402
from crm_pipeline.sandbox.server import SandboxServer  # noqa: E402

PROJECT = "crm-bench-scale"
MIRROR = "firestore_customer_mirror"
STAGES = (
    "full_refresh",
    "full_refresh without mirror check",
    "mirror check of full_refresh",
    "incremental 1%",
    "webhooks",
    "metrics",
    "mirror",
    "recompute_bucketed",
)


def timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def measure(size: int, deliveries: int, buckets: int, loads: dict[str, float]) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="crm-bench-scale-", dir="/tmp"))
    store = root / "store"
    shutil.copytree(store_for(size), store)
    server = EmbeddedPostgres(root / "postgres")
    emulator = FirestoreEmulator(root / "firestore", project=PROJECT, heap_mb=heap_for(size))
    figures: dict[str, float] = {}
    try:
        server.start()
        dsn = server.create_database("crm_bench")
        migrate(dsn)
        engine = make_engine(dsn)
        host = emulator.start()
        with SandboxServer(store, shopify_plan="plus", klaviyo_rate_limits=False) as sandbox:
            os.environ.update(
                {
                    "CRM_DATABASE_URL": dsn,
                    "SHOPIFY_API_URL": sandbox.url,
                    "KLAVIYO_API_URL": sandbox.url,
                    "FIRESTORE_EMULATOR_HOST": host,
                    "GOOGLE_CLOUD_PROJECT": PROJECT,
                    "KLAVIYO_SYNC_ENABLED": "1",
                }
            )
            full = run_job("full_refresh")
            figures["full_refresh"] = full.wall
            figures["full_refresh without mirror check"] = full.wall - full.steps.get(CHECK, 0)
            figures["mirror check of full_refresh"] = full.steps.get(CHECK, 0)
            figures["mirror"] = full.steps.get(MIRROR, 0)
            loads["full_refresh"] = os.getloadavg()[0]
            print_steps(full)
            mutate_store(store, 0.01, seed=3, now=datetime.now(UTC) - timedelta(minutes=1))
            sandbox.reload()
            incremental = run_job("incremental_sync")
            figures["incremental 1%"] = incremental.wall
            loads["incremental 1%"] = os.getloadavg()[0]
            print_steps(incremental)
            land_staff_actions(engine, min(deliveries, size))
            hooks = run_job("process_webhooks")
            figures["webhooks"] = sum(s for k, s in hooks.steps.items() if k != CHECK)
            loads["webhooks"] = os.getloadavg()[0]
            print_steps(hooks)
            figures["metrics"] = timed(lambda: refresh_metrics(engine, full=True))
            loads["metrics"] = os.getloadavg()[0]
            job = bucketed_job(buckets)
            figures["recompute_bucketed"] = timed(
                lambda: job.execute_in_process(
                    resources=resources(), instance=dg.DagsterInstance.ephemeral()
                )
            )
            loads["recompute_bucketed"] = os.getloadavg()[0]
        engine.dispose()
    finally:
        emulator.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return figures


def report(results: dict[int, dict[str, float]], deliveries: int) -> None:
    sizes = sorted(results)
    print("\n| stage | " + " | ".join(f"{n:,} customers" for n in sizes) + " | ratios |")
    print("|---|" + "---|" * len(sizes) + "---|")
    for stage in STAGES:
        cells = [f"{results[n][stage]:.1f} s" for n in sizes]
        ratios = [
            f"{results[b][stage] / results[a][stage]:.2f}× for {b / a:.0f}× customers"
            for a, b in zip(sizes, sizes[1:], strict=False)
            if results[a][stage] > 0
        ]
        label = f"webhooks ({deliveries:,} deliveries)" if stage == "webhooks" else stage
        print(f"| {label} | " + " | ".join(cells) + " | " + "; ".join(ratios) + " |")
    for n in sizes:
        share = results[n]["incremental 1%"] / results[n]["full_refresh"]
        base = results[n]["incremental 1%"] / results[n]["full_refresh without mirror check"]
        print(
            f"{n:,}: incremental 1% = {share:.1%} of full_refresh "
            f"({base:.1%} of it without the mirror check)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--deliveries", type=int, default=10000)
    parser.add_argument("--buckets", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict[int, dict[str, float]] = {}
    for size in sorted(args.sizes):
        print(f"== {size:,} customers ==", flush=True)
        loads: dict[str, float] = {}
        results[size] = measure(size, args.deliveries, args.buckets, loads)
        for stage, seconds in results[size].items():
            load = f"  (load {loads[stage]:.1f})" if stage in loads else ""
            print(f"  {stage:<36} {seconds:8.1f} s{load}", flush=True)
    report(results, args.deliveries)


if __name__ == "__main__":
    main()
