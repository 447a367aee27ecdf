"""Benchmark: the mirror with complete history (every order, activity and note as a subdocument).

Seeds an embedded PostgreSQL (temp dir) with N synthetic customers (bench_mirror.py's seed) and
gives them realistic histories on top: 0-6 more orders (about 3 on average, like the sandbox
generator's 3 orders per customer) and 0-40 more activities (about 20), and one customer in 1,000
a long history of 150 orders and 500 activities. Then, against the Firestore emulator:

1. the first sync (every customer document, address, order, activity and note);
2. a run with nothing changed (the baseline of what a run costs: one hash compare per customer,
   no writes);
3. a run after 1 % of the customers got one new activity each (only those subdocuments).

Prints customers, subdocuments, seconds and docs/s of each, the no-change run's time as a share
of the first sync's, and against a baseline measured in the same run: building every customer
document alone (what a no-change run cost before the history was complete).

    python bench/bench_mirror_history.py --customers 20000
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crm_pipeline.db.engine import make_engine  # noqa: E402
from crm_pipeline.db.migrate import migrate  # noqa: E402
from crm_pipeline.db.server import EmbeddedPostgres  # noqa: E402
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource  # noqa: E402
from crm_pipeline.firestore.documents import fetch_customer_batch  # noqa: E402
from crm_pipeline.firestore.emulator import FirestoreEmulator, heap_for  # noqa: E402
from crm_pipeline.firestore.mirror import MirrorSettings, MirrorSummary, sync_mirror  # noqa: E402
from crm_pipeline_tests.firestore.seed import seed_customers  # noqa: E402

PROJECT = "crm-bench-history"

_HISTORY_SQL = [
    """
    INSERT INTO orders (id, customer_id, source, external_id, created_at, financial_status,
                        total_price, total_refunded, currency)
    SELECT md5('bench-order-' || i || '-' || k)::uuid, md5('crm-mirror-' || i)::uuid, 'shopify',
           'bench-ord-' || i || '-' || k,
           timestamptz '2023-01-01 00:00:00+00' + ((i + k * 7919) % 900) * interval '1 day',
           'paid', 10 + k, 0, 'USD'
    FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS i
    CROSS JOIN LATERAL generate_series(1, CASE WHEN i % 1000 = 0 THEN 150 ELSE i * 37 % 7 END) k
    """,
    """
    INSERT INTO customer_activities (customer_id, activity_type, occurred_at, properties, source,
                                     external_id)
    SELECT md5('crm-mirror-' || i)::uuid,
           (ARRAY['page_view', 'email_open', 'email_click', 'product_view',
                  'add_to_cart'])[1 + k % 5],
           timestamptz '2023-01-01 00:00:00+00' + ((i + k * 7919) % 50000) * interval '30 minutes',
           jsonb_build_object('campaign', 'Spring', 'n', k), 'klaviyo',
           'bench-evt-' || i || '-' || k
    FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS i
    CROSS JOIN LATERAL generate_series(1, CASE WHEN i % 1000 = 0 THEN 500 ELSE i * 7919 % 41 END) k
    """,
]
_ONE_NEW_ACTIVITY = """
INSERT INTO customer_activities (customer_id, activity_type, occurred_at, source, external_id)
SELECT md5('crm-mirror-' || i)::uuid, 'page_view', now(), 'klaviyo', 'bench-new-' || i
FROM generate_series(1, CAST(:last AS int)) AS i WHERE i % 100 = 7
"""


def seed(engine: sa.Engine, customers: int, chunk: int = 20_000) -> None:
    seed_customers(engine, customers)
    for start in range(1, customers + 1, chunk):
        stop = min(start + chunk - 1, customers)
        with engine.begin() as conn:
            for statement in _HISTORY_SQL:
                conn.execute(sa.text(statement), {"first": start, "last": stop})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")


def documents_only_seconds(engine: sa.Engine, batch_size: int) -> float:
    """Building every customer document (no history), the whole cost of a no-change run before
    the history was complete: the baseline of the no-change run."""
    started = time.perf_counter()
    after: str | None = None
    with engine.connect() as conn:
        while batch := fetch_customer_batch(conn, after, batch_size):
            after = batch[-1].customer_id
    return time.perf_counter() - started


def _report(label: str, summary: MirrorSummary) -> None:
    print(
        f"{label}: {summary.considered:,} customers considered, {summary.written:,} written, "
        f"{summary.documents_written:,} documents in {summary.seconds:.1f}s = "
        f"{summary.docs_per_s:,.0f} docs/s (failed {summary.failed})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    root = Path(tempfile.mkdtemp(prefix="crm-bench-history-", dir="/tmp"))
    server = EmbeddedPostgres(root / "postgres")
    # the emulator keeps every subdocument in memory: size the heap for ~30 per customer
    emulator = FirestoreEmulator(
        root / "firestore", project=PROJECT, heap_mb=heap_for(args.customers * 10)
    )
    try:
        server.start()
        dsn = server.create_database("crm_bench")
        migrate(dsn)
        engine = make_engine(dsn)
        started = time.perf_counter()
        seed(engine, args.customers)
        with engine.connect() as conn:
            counts = conn.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM "
                    "customer_activities), (SELECT count(*) FROM customer_notes), "
                    "(SELECT count(*) FROM customer_addresses)"
                )
            ).one()
        orders, activities, notes, addresses = counts
        print(
            f"seeded {args.customers:,} customers: {orders:,} orders, {activities:,} activities, "
            f"{notes:,} notes, {addresses:,} addresses "
            f"({(orders + activities + notes) / args.customers:.1f} history subdocuments per "
            f"customer) in {time.perf_counter() - started:.1f}s"
        )
        host = emulator.start()
        client = FirestoreResource(project=PROJECT, emulator_host=host).get_client()
        settings = MirrorSettings(batch_size=args.batch_size, threads=args.threads)

        first = sync_mirror(engine, client, settings)
        _report("first sync", first)
        unchanged = sync_mirror(engine, client, settings)
        _report("no-change run", unchanged)
        with engine.begin() as conn:
            conn.execute(sa.text(_ONE_NEW_ACTIVITY), {"last": args.customers})
        small = sync_mirror(engine, client, settings)
        _report("1 % of customers with one new activity", small)
        baseline = documents_only_seconds(engine, args.batch_size)
        print(
            f"no-change run / first sync: {unchanged.seconds / first.seconds:.3f} "
            f"({args.customers / unchanged.seconds:,.0f} customers/s compared)"
        )
        print(
            f"baseline, building the customer documents alone: {baseline:.1f}s; no-change run "
            f"/ baseline: {unchanged.seconds / baseline:.2f}"
        )
    finally:
        emulator.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
