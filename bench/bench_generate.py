"""Benchmark of the sandbox store generator: customers per second and store size.

python bench/bench_generate.py                    # 100k and 1M customers
python bench/bench_generate.py --sizes 100000 --workers 2 --keep /tmp/store
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from crm_pipeline.sandbox import pools
from crm_pipeline.sandbox.generate import generate_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write the store here and keep it")
    args = parser.parse_args()
    pools.locale_pools()  # one-off Faker pool build is not part of the per-customer rate
    for size in args.sizes:
        out = args.keep or Path(tempfile.mkdtemp(prefix="crm-bench-store-"))
        started = time.perf_counter()
        summary = generate_store(out, size, seed=args.seed, workers=args.workers)
        seconds = time.perf_counter() - started
        total = sum(summary.files.values())
        print(
            f"{size:>9,} customers  workers={args.workers}  {seconds:7.1f}s  "
            f"{size / seconds:9,.0f} customers/s  orders={summary.orders:,}  "
            f"profiles={summary.profiles:,}  events={summary.events:,}  "
            f"size={total / 1e9:.2f} GB"
        )
        for rel, nbytes in sorted(summary.files.items()):
            print(f"    {rel:<36} {nbytes / 1e6:10.1f} MB")
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
