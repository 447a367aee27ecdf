"""Benchmark: the mirror's first sync vs raw batched Firestore writes of the same documents.

Seeds an embedded PostgreSQL (temp dir) with N synthetic customers (metrics, segments, addresses,
orders, activities), starts the Firestore emulator, then:

1. times `sync_mirror` (SQL document building, hashing, writes, state and sync logs);
2. clears the emulator and times raw `WriteBatch.commit()` calls of 500 writes over the same
   documents with the same number of threads (document building excluded from the timing);
3. the same with the mirror's protobuf encoder and the Commit RPC: the mirror's write path
   without its SQL, hashing, state and logs, which isolates the cost of the bookkeeping.

The emulator's JVM is warmed up first and the two passes alternate for `--rounds` rounds, so
JIT warm-up and noise from other processes do not favour one side. Prints docs/s of both (a
document is one Firestore write: customer documents plus subcollection documents) and the ratio
of the medians mirror/raw (target >= 0.8).

    python bench/bench_mirror.py --customers 20000 --threads 4
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from google.api_core.exceptions import GoogleAPICallError
from google.cloud import firestore
from google.cloud.firestore_v1.bulk_batch import BulkWriteBatch
from google.cloud.firestore_v1.types.firestore import CommitRequest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crm_pipeline.db.engine import make_engine  # noqa: E402
from crm_pipeline.db.migrate import migrate  # noqa: E402
from crm_pipeline.db.server import EmbeddedPostgres  # noqa: E402
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource  # noqa: E402
from crm_pipeline.firestore.documents import (  # noqa: E402
    CUSTOMERS,
    CustomerDocument,
    fetch_customer_batch,
)
from crm_pipeline.firestore.emulator import (  # noqa: E402
    FirestoreEmulator,
    clear_emulator,
    heap_for,
)
from crm_pipeline.firestore.mirror import (  # noqa: E402
    MAX_BATCH_WRITES,
    FirestoreWrite,
    MirrorSettings,
    sync_mirror,
    write_protobuf,
)
from crm_pipeline_tests.firestore.seed import seed_customers  # noqa: E402

PROJECT = "crm-bench"


def _raw_writes(document: CustomerDocument) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    root = (CUSTOMERS, document.customer_id)
    writes = [(root, {**document.data, "mirrored_at": firestore.SERVER_TIMESTAMP})]
    for name, docs in document.subcollections().items():
        writes.extend(((*root, name, sub_id), sub) for sub_id, sub in docs.items())
    return writes


def raw_write_seconds(
    engine: Any,
    client: firestore.Client,
    batch_size: int,
    threads: int,
    limit: int | None = None,
    mode: str = "client",
) -> tuple[float, int]:
    """Write every document with plain 500-write batches; returns (write seconds, documents).

    mode `client`: the library's WriteBatch (Commit RPC); `bulk`: the library's BulkWriteBatch
    (BatchWrite RPC, the mirror's, used for warming up); `protobuf`: Commit RPC with the
    mirror's protobuf encoder, i.e. the mirror's write path without any of its bookkeeping.
    """
    total = 0.0
    documents = 0
    after: str | None = None

    prefix = client._database_string + "/documents/"

    def commit(chunk: list[tuple[tuple[str, ...], dict[str, Any]]]) -> None:
        if mode == "protobuf":
            writes = [
                write_protobuf(prefix, FirestoreWrite("set", path, data), False)
                for path, data in chunk
            ]
            request = CommitRequest.pb()(database=client._database_string, writes=writes)
            client._firestore_api.commit(
                request=CommitRequest.wrap(request), metadata=client._rpc_metadata
            )
            return
        batch = BulkWriteBatch(client) if mode == "bulk" else client.batch()
        for path, data in chunk:
            batch.set(client.document(*path), data)
        batch.commit()

    def commit_retrying(chunk: list) -> None:
        # the baseline gets the same courtesy as the mirror: transient emulator deadlines are
        # retried with backoff (the time spent waiting counts against it)
        for attempt in range(6):
            try:
                commit(chunk)
                return
            except (GoogleAPICallError, grpc.RpcError):
                if attempt == 5:
                    raise
                time.sleep(0.5 * 2**attempt)

    with ThreadPoolExecutor(threads) as pool, engine.connect() as conn:
        while True:
            batch = fetch_customer_batch(conn, after, batch_size)
            conn.commit()
            if not batch or (limit is not None and documents >= limit):
                break
            after = batch[-1].customer_id
            writes = [w for document in batch for w in _raw_writes(document)]
            chunks = [
                writes[i : i + MAX_BATCH_WRITES] for i in range(0, len(writes), MAX_BATCH_WRITES)
            ]
            started = time.perf_counter()
            list(pool.map(commit_retrying, chunks))
            total += time.perf_counter() - started
            documents += len(writes)
    return total, documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=10_000, help="documents per warm-up pass")
    parser.add_argument("--rounds", type=int, default=2, help="alternating mirror/raw rounds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    root = Path(tempfile.mkdtemp(prefix="crm-bench-mirror-", dir="/tmp"))
    server = EmbeddedPostgres(root / "postgres")
    emulator = FirestoreEmulator(
        root / "firestore", project=PROJECT, heap_mb=heap_for(args.customers)
    )
    try:
        server.start()
        dsn = server.create_database("crm_bench")
        migrate(dsn)
        engine = make_engine(dsn)
        started = time.perf_counter()
        seed_customers(engine, args.customers)
        print(f"seeded {args.customers} customers in {time.perf_counter() - started:.1f}s")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")

        host = emulator.start()
        client = FirestoreResource(project=PROJECT, emulator_host=host).get_client()

        # Warm the emulator's JVM first: otherwise whichever pass runs first pays for JIT.
        for mode in ("client", "bulk", "protobuf", "client", "bulk", "protobuf"):
            warm_seconds, warm_docs = raw_write_seconds(
                engine, client, args.batch_size, args.threads, limit=args.warmup, mode=mode
            )
            clear_emulator(host, PROJECT)
            print(f"warm-up ({mode}): {warm_docs} docs in {warm_seconds:.1f}s")

        settings = MirrorSettings(batch_size=args.batch_size, threads=args.threads)
        mirror_rates: list[float] = []
        raw_rates: list[float] = []
        proto_rates: list[float] = []
        for round_no in range(1, args.rounds + 1):
            # Each round starts from an empty emulator and no mirror state: a true first sync.
            clear_emulator(host, PROJECT)
            with engine.begin() as conn:
                conn.exec_driver_sql("TRUNCATE firestore_mirror_state, customer_sync_logs")
            summary = sync_mirror(engine, client, settings)
            mirror_rates.append(summary.documents_written / summary.seconds)
            print(
                f"[{round_no}] mirror first sync: {summary.written} customers, "
                f"{summary.documents_written} docs in {summary.seconds:.1f}s = "
                f"{mirror_rates[-1]:,.0f} docs/s ({summary.customers_per_s:,.0f} customers/s, "
                f"failed {summary.failed})"
            )
            if round_no == 1:
                again = sync_mirror(engine, client, settings)
                print(
                    f"[{round_no}] mirror second run (nothing changed): {again.seconds:.1f}s, "
                    f"wrote {again.written}, unchanged {again.unchanged}"
                )
            for mode, rates in (("client", raw_rates), ("protobuf", proto_rates)):
                clear_emulator(host, PROJECT)
                seconds, documents = raw_write_seconds(
                    engine, client, args.batch_size, args.threads, mode=mode
                )
                rates.append(documents / seconds)
                print(
                    f"[{round_no}] raw batched writes ({mode} encoding): {documents} docs in "
                    f"{seconds:.1f}s = {rates[-1]:,.0f} docs/s"
                )
        mirror_rate = statistics.median(mirror_rates)
        raw_rate, proto_rate = statistics.median(raw_rates), statistics.median(proto_rates)
        print(
            f"median over {args.rounds} rounds: mirror {mirror_rate:,.0f} docs/s, "
            f"raw WriteBatch {raw_rate:,.0f} docs/s, raw protobuf Commit {proto_rate:,.0f} docs/s"
        )
        print(f"ratio mirror/raw WriteBatch: {mirror_rate / raw_rate:.2f} (target >= 0.8)")
        print(
            f"ratio mirror/raw protobuf Commit (same encoder, no bookkeeping): "
            f"{mirror_rate / proto_rate:.2f}"
        )
    finally:
        emulator.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
