"""Benchmark: how fast a run of the code location starts (issue 18, fast starts).

Prints, each the median of --rounds fresh interpreters:
- `import dagster` alone (the floor no change of ours can go under);
- `import crm_pipeline.definitions` (what every run, step worker and sensor tick process pays);
- launching `dagster job execute -j process_webhooks` with nothing to do, to its first
  STEP_START event (what a sensor-started run waits before its first step), against a temporary
  DAGSTER_HOME and CRM_HOME (an embedded PostgreSQL, started once beforehand, not timed).

    python bench/bench_start.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed_import(module: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, check=True)
    return time.perf_counter() - began


def first_step(env: dict[str, str]) -> float:
    """Seconds from launching the job to the first STEP_START line of its output."""
    command = [sys.executable, "-m", "dagster", "job", "execute"]
    command += ["-m", "crm_pipeline.definitions", "-j", "process_webhooks"]
    began = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = None
    assert process.stdout is not None
    for line in process.stdout:
        if seen is None and "STEP_START" in line:
            seen = time.perf_counter() - began
    process.wait()  # the run's outcome does not matter here (no emulator), its start does
    if seen is None:
        sys.exit(f"process_webhooks started no step (exit {process.returncode})")
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from crm_pipeline.db.migrate import migrate
    from crm_pipeline.db.server import EmbeddedPostgres

    work = Path(tempfile.mkdtemp(prefix="bench-start-", dir="/tmp"))
    server = EmbeddedPostgres(work / "crm_home" / "postgres")
    try:
        migrate(server.start())
        (work / "dagster_home").mkdir()
        shutil.copy(ROOT / "dagster.yaml", work / "dagster_home" / "dagster.yaml")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "DAGSTER_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            CRM_HOME=str(work / "crm_home"),
            DAGSTER_HOME=str(work / "dagster_home"),
        )
        floor = statistics.median(timed_import("dagster") for _ in range(args.rounds))
        location = statistics.median(
            timed_import("crm_pipeline.definitions") for _ in range(args.rounds)
        )
        start = statistics.median(first_step(env) for _ in range(args.rounds))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"import dagster (floor)                      {floor:6.2f} s")
    print(f"import crm_pipeline.definitions             {location:6.2f} s")
    print(f"dagster job execute process_webhooks -> first STEP_START {start:6.2f} s")


if __name__ == "__main__":
    main()
