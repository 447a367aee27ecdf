"""Benchmark: the Firestore mirror's consistency check alone, on a mirrored store with history.

Seeds an embedded PostgreSQL with N customers and bench_mirror_history.py's histories (about 28
subdocuments each), mirrors them to the emulator once, then times:

1. the probe behind the design: one customer's subcollections read by query (`.stream()`, which
   the emulator answers by scanning its whole database) against the same subdocuments read by
   key (`get_all` of their references), per customer;
2. the run-sized check (`verify_customers`): 50 written ids plus the default 50-customer sample;
3. the full check (`check_mirror_consistency`), streaming.

Prints seconds, documents read and customers/s of each; the per-customer query/key ratio is the
baseline measured in the same run.

    python bench/bench_verify.py --customers 5000
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mirror_history import seed  # noqa: E402

from crm_pipeline.db.engine import make_engine  # noqa: E402
from crm_pipeline.db.migrate import migrate  # noqa: E402
from crm_pipeline.db.server import EmbeddedPostgres  # noqa: E402
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource  # noqa: E402
from crm_pipeline.firestore.documents import CUSTOMERS  # noqa: E402
from crm_pipeline.firestore.emulator import FirestoreEmulator, heap_for  # noqa: E402
from crm_pipeline.firestore.history import HISTORY  # noqa: E402
from crm_pipeline.firestore.mirror import MirrorSettings, sync_mirror  # noqa: E402
from crm_pipeline.firestore.verify import (  # noqa: E402
    RUN_SAMPLE,
    check_mirror_consistency,
    verify_customers,
)

PROJECT = "crm-bench-verify"


def probe(client: object, engine: sa.Engine, probes: int) -> tuple[float, float]:
    """Seconds per customer reading its subcollections by query, then by key."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT customer_id::text, collection, doc_id FROM firestore_mirror_subdocuments "
                "WHERE customer_id IN (SELECT customer_id FROM firestore_mirror_subdocuments "
                "GROUP BY customer_id ORDER BY customer_id LIMIT :n)"
            ),
            {"n": probes},
        ).all()
    by_customer: dict[str, list[tuple[str, str]]] = {}
    for cid, collection, doc_id in rows:
        by_customer.setdefault(cid, []).append((collection, doc_id))
    customers = client.collection(CUSTOMERS)  # type: ignore[attr-defined]
    started = time.perf_counter()
    for cid in by_customer:
        for name in HISTORY:
            list(customers.document(cid).collection(name).stream())
    by_query = (time.perf_counter() - started) / len(by_customer)
    started = time.perf_counter()
    for cid, keys in by_customer.items():
        refs = [customers.document(cid).collection(c).document(d) for c, d in keys]
        list(client.get_all([customers.document(cid), *refs]))  # type: ignore[attr-defined]
    by_key = (time.perf_counter() - started) / len(by_customer)
    return by_query, by_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--written", type=int, default=50)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--skip-full", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    root = Path(tempfile.mkdtemp(prefix="crm-bench-verify-", dir="/tmp"))
    server = EmbeddedPostgres(root / "postgres")
    emulator = FirestoreEmulator(
        root / "firestore", project=PROJECT, heap_mb=heap_for(args.customers * 10)
    )
    try:
        server.start()
        dsn = server.create_database("crm_bench")
        migrate(dsn)
        engine = make_engine(dsn)
        seed(engine, args.customers)
        host = emulator.start()
        client = FirestoreResource(project=PROJECT, emulator_host=host).get_client()
        first = sync_mirror(engine, client, MirrorSettings(batch_size=2000, threads=4))
        print(
            f"mirrored {args.customers:,} customers, {first.documents_written:,} documents "
            f"in {first.seconds:.1f}s"
        )
        by_query, by_key = probe(client, engine, args.probes)
        print(
            f"one customer's history by query: {by_query * 1000:.0f} ms, by key: "
            f"{by_key * 1000:.1f} ms (query / key: {by_query / by_key:.0f}x)"
        )
        with engine.connect() as conn:
            ids = list(conn.execute(sa.text("SELECT id::text FROM customers")).scalars())
        written = random.Random(7).sample(ids, args.written)

        started = time.perf_counter()
        run = verify_customers(engine, client, written, sample=RUN_SAMPLE)
        seconds = time.perf_counter() - started
        print(
            f"run-sized check ({args.written} written + {RUN_SAMPLE} sampled): {seconds:.2f}s, "
            f"{run.checked} customers, {run.documents_read:,} documents read, ok={run.ok}"
        )
        if not args.skip_full:
            started = time.perf_counter()
            full = check_mirror_consistency(engine, client)
            seconds = time.perf_counter() - started
            print(
                f"full check: {seconds:.1f}s, {full.checked:,} customers "
                f"({full.checked / seconds:,.0f}/s), {full.documents_read:,} documents read, "
                f"ok={full.ok}"
            )
    finally:
        emulator.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
