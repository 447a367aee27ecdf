"""Incremental runs against a full refresh (issue 18 acceptance), on a generated store.

Starts an embedded PostgreSQL, the Firestore emulator (heap sized for the store) and the sandbox
Shopify/Klaviyo API (Klaviyo's rate windows on), then runs the code location's jobs in-process:

1. `full_refresh`: wall time per step, and each API-bound step's floor (pages / documented rate
   limit, from the pull's metadata) with how close it came;
2. `incremental_sync` with nothing changed, and again after 1% of the customers changed in the
   sandbox (`mutate_store`), each as a share of the full refresh (target <= 3%, excluding run
   start: the time before the first step begins);
3. `process_webhooks` with 10 staff-action deliveries waiting (target <= 2 s of step time).

    python bench/bench_incremental.py [--customers 5000] [--keep]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crm_pipeline.db.engine import make_engine  # noqa: E402
from crm_pipeline.db.migrate import migrate  # noqa: E402
from crm_pipeline.db.server import EmbeddedPostgres  # noqa: E402
from crm_pipeline.definitions import build_definitions  # noqa: E402
from crm_pipeline.firestore.emulator import FirestoreEmulator, heap_for  # noqa: E402
from crm_pipeline.sandbox.generate import generate_store, mutate_store  # noqa: E402
from crm_pipeline.sandbox.server import SandboxServer  # noqa: E402

OUT = ROOT / "bench" / "out"
PROJECT = "crm-bench-incremental"
PULLS = ("shopify_customers", "shopify_orders", "klaviyo_profiles", "klaviyo_events")


@dataclass
class Run:
    name: str
    wall: float
    start: float  # from execute to the first STEP_START
    steps: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def after_start(self) -> float:
        return self.wall - self.start


def run_job(name: str) -> Run:
    instance = dg.DagsterInstance.ephemeral()
    started = time.time()
    result = build_definitions().resolve_job_def(name).execute_in_process(instance=instance)
    wall = time.time() - started
    if not result.success:
        raise SystemExit(f"{name} failed")
    begun: dict[str, float] = {}
    steps: dict[str, float] = {}
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            begun[entry.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            steps[entry.step_key] = entry.timestamp - begun[entry.step_key]
    first = min(begun.values()) if begun else started
    metadata = {
        event.asset_key.to_user_string(): {
            k: v.value for k, v in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None
    }
    return Run(name, wall, first - started, steps, metadata)


def store_for(n: int) -> Path:
    store = OUT / f"store-{n}"
    if not (store / "store.json").exists():
        print(f"generating a {n:,}-customer store in {store} ...", flush=True)
        generate_store(store, customers=n, seed=1)
    return store


def land_staff_actions(engine: sa.Engine, count: int) -> None:
    """`count` signed-and-verified admin deliveries as the receiver stores them."""
    with engine.begin() as conn:
        ids = [
            str(r[0])
            for r in conn.execute(
                sa.text(
                    "SELECT id FROM customers WHERE deleted_at IS NULL AND merged_into IS NULL "
                    "ORDER BY random() LIMIT :n"
                ),
                {"n": count},
            )
        ]
        for number, cid in enumerate(ids):
            payload = {
                "action": "customer.note",
                "action_id": str(uuid.uuid4()),
                "customer_id": cid,
                "internal_notes": f"bench note {number}",
                "occurred_at": datetime.now(UTC).isoformat(),
                "actor": "bench@shop.example",
            }
            conn.execute(
                sa.text(
                    "INSERT INTO webhook_events (source, topic, delivery_id, triggered_at, "
                    "headers, payload) VALUES ('manual', 'customer.note', :did, now(), "
                    "'{}'::jsonb, CAST(:payload AS jsonb))"
                ),
                {"did": payload["action_id"], "payload": orjson.dumps(payload).decode()},
            )


def print_steps(run: Run) -> None:
    print(f"\n{run.name}: {run.wall:.1f}s wall ({run.start:.1f}s run start, "
          f"{sum(run.steps.values()):.1f}s in steps)")  # fmt: skip
    for step, seconds in sorted(run.steps.items(), key=lambda kv: -kv[1]):
        line = f"  {step:<48} {seconds:7.2f}s"
        meta = run.metadata.get(step, {})
        if "api_floor_seconds" in meta:
            floor = meta["api_floor_seconds"]
            line += f"   API floor {floor:.2f}s (elapsed/floor {meta.get('api_floor_ratio', 0)})"
        print(line)


CHECK = "firestore_customer_mirror_firestore_customer_mirror_consistent"


def share(run: Run, full: Run) -> str:
    steps = sum(s for k, s in run.steps.items() if k != CHECK)
    full_steps = sum(s for k, s in full.steps.items() if k != CHECK)
    return (
        f"{run.name}: {run.wall:.1f}s wall = {run.wall / full.wall:.1%} of the full refresh; "
        f"excluding run start {run.after_start:.1f}s = {run.after_start / full.after_start:.1%}; "
        f"steps without the mirror check (issue 18 item 1) {steps:.1f}s = "
        f"{steps / full_steps:.1%} of the full refresh's {full_steps:.1f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="crm-bench-incremental-", dir="/tmp"))
    store = root / "store"
    shutil.copytree(store_for(args.customers), store)
    server = EmbeddedPostgres(root / "postgres")
    emulator = FirestoreEmulator(
        root / "firestore", project=PROJECT, heap_mb=heap_for(args.customers)
    )
    try:
        server.start()
        dsn = server.create_database("crm_bench")
        migrate(dsn)
        engine = make_engine(dsn)
        host = emulator.start()
        with SandboxServer(store, shopify_plan="plus") as sandbox:
            os.environ.update(
                {
                    "CRM_DATABASE_URL": dsn,
                    "SHOPIFY_API_URL": sandbox.url,
                    "KLAVIYO_API_URL": sandbox.url,
                    "FIRESTORE_EMULATOR_HOST": host,
                    "GOOGLE_CLOUD_PROJECT": PROJECT,
                }
            )
            full = run_job("full_refresh")
            print_steps(full)
            nothing = run_job("incremental_sync")
            print_steps(nothing)
            changed = mutate_store(
                store, 0.01, seed=3, now=datetime.now(UTC) - timedelta(minutes=1)
            )
            sandbox.reload()
            one_percent = run_job("incremental_sync")
            one_percent.name = f"incremental_sync, 1% changed ({len(changed.customers)} customers)"
            nothing.name = "incremental_sync, nothing changed"
            print_steps(one_percent)
            land_staff_actions(engine, 10)
            hooks = run_job("process_webhooks")
            hooks.name = "process_webhooks, 10 deliveries"
            print_steps(hooks)
        print(f"\n== {args.customers:,} customers ==")
        print(f"full_refresh: {full.wall:.1f}s wall ({full.after_start:.1f}s after run start)")
        for pull in PULLS:
            meta = full.metadata.get(pull, {})
            print(
                f"  {pull:<20} {full.steps.get(pull, 0):6.1f}s   API floor "
                f"{meta.get('api_floor_seconds', 0):6.2f}s  elapsed/floor "
                f"{meta.get('api_floor_ratio', 0)}"
            )
        print(share(nothing, full))
        print(share(one_percent, full))
        print(
            f"{hooks.name}: {sum(hooks.steps.values()):.2f}s of step time "
            f"({hooks.wall:.1f}s wall); mirror wrote "
            f"{hooks.metadata.get('firestore_customer_mirror', {}).get('written')}"
        )
        engine.dispose()
    finally:
        emulator.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
