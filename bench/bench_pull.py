"""Pull throughput through the sandbox: bulk vs paginated Shopify customers (and orders).

Starts the sandbox API server over a store directory (index build timed separately, cached
in `DIR/.sandbox-index/` for the next run), then pulls through the real SDK-based clients:

    python bench/bench_pull.py STORE_DIR [--orders] [--paginated] [--fault-rate 0.0]

Prints records/s for each pull and, with --paginated, the ratio bulk/paginated (the paged pull
is time-boxed: Shopify's cost bucket holds it to ~25 customers/s on a standard plan).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crm_pipeline.sandbox.server import SandboxServer  # noqa: E402
from crm_pipeline.sources.shopify import ShopifyClient  # noqa: E402


def _timed(name: str, pull: Callable[[], Iterator[dict]], budget: float | None = None) -> float:
    """Records/s of one pull, overall and after the first record (for bulk: the download and
    assembly alone, without the time the operation took to build its file).

    With `budget`, stop after that many seconds: paged pulls are cost-throttled to a few dozen
    records/s, as on a real shop.
    """
    started = time.perf_counter()
    first_at = None
    count = 0
    for _ in pull():
        count += 1
        if first_at is None:
            first_at = time.perf_counter()
        if budget is not None and time.perf_counter() - started > budget:
            name += " (time-boxed)"
            break
    ended = time.perf_counter()
    seconds = ended - started
    rate = count / seconds if seconds else float("inf")
    wait = (first_at or ended) - started
    stream = (count - 1) / (ended - first_at) if first_at and ended > first_at else float("nan")
    print(
        f"{name:<38} {count:>10,} records {seconds:>7.1f}s {rate:>10,.0f}/s overall; "
        f"first record after {wait:.1f}s, then {stream:,.0f}/s",
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--orders", action="store_true", help="also pull orders in bulk")
    parser.add_argument("--paginated", action="store_true", help="also pull customers page by page")
    parser.add_argument("--paginated-seconds", type=float, default=20.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    started = time.perf_counter()
    server = SandboxServer(args.store, fault_rate=args.fault_rate, latency=args.latency).start()
    up = time.perf_counter() - started
    print(f"sandbox up (index load/build) in {up:.1f}s at {server.url}", flush=True)
    try:
        client = ShopifyClient(None, "bench-token", api_url=server.url)
        bulk = _timed("bulk_customers", client.bulk_customers)
        if args.orders:
            _timed("bulk_orders", client.bulk_orders)
        if args.paginated:
            since = datetime(1970, 1, 1, tzinfo=UTC)
            paged = _timed(
                "customers_updated_since",
                lambda: client.customers_updated_since(since),
                budget=args.paginated_seconds,
            )
            print(f"bulk / paginated: {bulk / paged:.1f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
