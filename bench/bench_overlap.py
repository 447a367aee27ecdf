"""full_refresh with its steps one after another and with the pulls overlapped, on one store.

Generates a store (or reuses --store), serves it with the sandbox (Klaviyo's documented rate
limits enforced, as the real API would), and for each mode runs `dagster job execute -j
full_refresh` as a new user would, in the repo root with a fresh CRM_HOME (embedded PostgreSQL),
a fresh DAGSTER_HOME holding the repo's dagster.yaml and a fresh Firestore emulator. Modes:

  in_process  the default: every step in the run's process, one after another
  overlap     `execution: {config: {multiprocess: ...}}` (crm_pipeline/defs/pipeline/executor.py):
              a process per step, the pull branches side by side, CPU-bound steps one at a time

Prints each step's start offset and duration (from the run's event log), each pull's API floor
(`api_floor_seconds` in its metadata), the longest floor, and the wall time of each mode with
the ratio overlap / in_process.

    python bench/bench_overlap.py --customers 5000 [--modes in_process overlap] [--store DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crm_pipeline.db.server import EmbeddedPostgres  # noqa: E402
from crm_pipeline.defs.pipeline.executor import execution_config  # noqa: E402
from crm_pipeline.firestore.emulator import FirestoreEmulator, heap_for  # noqa: E402
from crm_pipeline.sandbox.generate import generate_store  # noqa: E402
from crm_pipeline.sandbox.server import SandboxServer  # noqa: E402

MODES = ("in_process", "overlap")


def run_events(dagster_home: Path) -> tuple[list[tuple[str, float, float]], dict[str, float]]:
    """(step, start offset, seconds) of the only run in the instance, and each pull's
    `api_floor_seconds`, from its event log."""
    from dagster import DagsterEventType, DagsterInstance

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    with DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        records = instance.all_logs(run.run_id)
    first = min(r.timestamp for r in records)
    starts: dict[str, float] = {}
    rows = []
    floors: dict[str, float] = {}
    for r in records:
        event = r.dagster_event
        if event is None or not r.step_key:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[r.step_key] = r.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            begin = starts.get(r.step_key, r.timestamp)
            rows.append((r.step_key, begin - first, r.timestamp - begin))
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            floor = event.step_materialization_data.materialization.metadata.get(
                "api_floor_seconds"
            )
            if floor is not None:
                floors[r.step_key] = float(floor.value)
    return sorted(rows, key=lambda row: row[1]), floors


def run_full_refresh(store: Path, customers: int, mode: str, work: Path) -> float:
    """One `dagster job execute -j full_refresh` in `mode`; prints its steps, returns wall s."""
    base = work / mode
    dagster_home = base / "dagster_home"
    dagster_home.mkdir(parents=True)
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    run_config = base / "run_config.yaml"
    run_config.write_text(yaml.safe_dump({"execution": execution_config(mode == "overlap")}))
    home = base / "crm_home"
    project = f"bench-overlap-{mode.replace('_', '-')}"
    emulator = FirestoreEmulator(base / "fs", project=project, heap_mb=heap_for(customers))
    try:
        with SandboxServer(store) as sandbox:
            host = emulator.start()
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("CRM_", "DAGSTER_", "SHOPIFY_", "KLAVIYO_"))
            }
            env.update(
                PYTHONPATH=str(ROOT),
                DAGSTER_HOME=str(dagster_home),
                CRM_HOME=str(home),
                SHOPIFY_API_URL=sandbox.url,
                SHOPIFY_ACCESS_TOKEN="shpat_bench",
                KLAVIYO_API_URL=sandbox.url,
                KLAVIYO_API_KEY="pk_bench",
                FIRESTORE_EMULATOR_HOST=host,
                GOOGLE_CLOUD_PROJECT=project,
            )
            command = [sys.executable, "-m", "dagster", "job", "execute"]
            command += ["-m", "crm_pipeline.definitions", "-j", "full_refresh"]
            command += ["-c", str(run_config)]
            began = time.perf_counter()
            result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - began
        if result.returncode != 0:
            sys.exit(result.stdout[-3000:] + result.stderr[-3000:])
        steps, floors = run_events(dagster_home)
        print(f"\n== {mode}: full_refresh, {customers:,} customers ==")
        print(f"{'step':58} {'start s':>8} {'took s':>8} {'API floor s':>12}")
        for step, start, took in steps:
            floor = f"{floors[step]:12.1f}" if step in floors else ""
            print(f"{step:58} {start:8.1f} {took:8.1f} {floor}")
        if floors:
            longest = max(floors, key=floors.__getitem__)
            print(f"longest API floor: {longest} {floors[longest]:.1f} s")
        print(f"wall time (process start to exit): {wall:.1f} s", flush=True)
        return wall
    finally:
        emulator.stop()
        EmbeddedPostgres(home / "postgres").stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--store", type=Path, help="reuse a generated store")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-overlap-", dir="/tmp"))
    try:
        store = args.store or work / "store"
        if args.store is None:
            generate_store(store, customers=args.customers, seed=7)
        walls = {mode: run_full_refresh(store, args.customers, mode, work) for mode in args.modes}
        if len(walls) == 2:
            ratio = walls["overlap"] / walls["in_process"]
            print(f"\noverlap / in_process wall time: {ratio:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
