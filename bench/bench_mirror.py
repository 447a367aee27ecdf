"""Benchmark: the mirror's first sync vs raw batched Firestore writes of the same documents.

Seeds an embedded PostgreSQL (temp dir) with N synthetic customers (metrics, segments, addresses,
orders, activities), starts the Firestore emulator, then:

1. times `sync_mirror` (SQL document building, hashing, writes, state and sync logs);
2. the fair baseline: clears the emulator and times raw BatchWrite RPCs of the same documents,
   the mirror's RPC, with the mirror's request shape (whole customers, at most 500 writes per
   request, documents encoded in the sending thread) and the same number of requests in flight
   (`--threads`, the mirror's writer threads). Document building is excluded from its timing;
   it waits for its requests at every `--batch-size` boundary, where the mirror overlaps two
   batches (a tail of about one request per thread per batch);
3. the library's `WriteBatch.commit()` (Commit RPC, proto-plus encoding) over the same documents
   with the same threads, as a second ratio (the baseline of earlier runs).

The emulator's JVM is warmed up first and the passes alternate for `--rounds` rounds (even
rounds run them in reverse order), so JIT warm-up, the emulator's drift and noise from other
processes do not favour one side. Prints docs/s of each (a
document is one Firestore write: customer documents plus subcollection documents) and the
ratios of the medians: mirror/raw BatchWrite (the fair one, target >= 0.8) and mirror/raw
WriteBatch.

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
from google.cloud.firestore_v1.types.firestore import BatchWriteRequest, BatchWriteResponse

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

    mode `batchwrite`: the BatchWrite RPC with the mirror's protobuf encoder, chunks of whole
    customers of at most 500 writes (the mirror's request); `client`: the library's WriteBatch
    (Commit RPC); `bulk`: the library's BulkWriteBatch (BatchWrite RPC, proto-plus encoding,
    used for warming up). `threads` requests are in flight at once, as in the mirror's writer.
    """
    total = 0.0
    documents = 0
    after: str | None = None

    prefix = client._database_string + "/documents/"

    def commit(chunk: list[tuple[tuple[str, ...], dict[str, Any]]]) -> None:
        if mode == "batchwrite":
            writes = [
                write_protobuf(prefix, FirestoreWrite("set", path, data), False)
                for path, data in chunk
            ]
            request = BatchWriteRequest.pb()(database=client._database_string, writes=writes)
            response = client._firestore_api.batch_write(
                request=BatchWriteRequest.wrap(request), metadata=client._rpc_metadata
            )
            # read the statuses on the raw protobuf, as the mirror does (no proto-plus wrapping)
            failed = [st for st in BatchWriteResponse.pb(response).status if st.code != 0]
            if failed:  # per-write statuses, as the mirror checks them
                raise RuntimeError(f"{len(failed)} writes failed: {failed[0].message}")
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
            chunks = _chunks([_raw_writes(document) for document in batch])
            started = time.perf_counter()
            list(pool.map(commit_retrying, chunks))
            total += time.perf_counter() - started
            documents += sum(len(chunk) for chunk in chunks)
    return total, documents


def _chunks(
    customers: list[list[tuple[tuple[str, ...], dict[str, Any]]]],
) -> list[list[tuple[tuple[str, ...], dict[str, Any]]]]:
    """Whole customers per request, at most 500 writes: the mirror writer's `_chunk`."""
    chunks: list[list[tuple[tuple[str, ...], dict[str, Any]]]] = []
    chunk: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    for writes in customers:
        if chunk and len(chunk) + len(writes) > MAX_BATCH_WRITES:
            chunks.append(chunk)
            chunk = []
        chunk.extend(writes)
    if chunk:
        chunks.append(chunk)
    return chunks


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
        for mode in ("client", "bulk", "batchwrite", "client", "bulk", "batchwrite"):
            warm_seconds, warm_docs = raw_write_seconds(
                engine, client, args.batch_size, args.threads, limit=args.warmup, mode=mode
            )
            clear_emulator(host, PROJECT)
            print(f"warm-up ({mode}): {warm_docs} docs in {warm_seconds:.1f}s")

        settings = MirrorSettings(batch_size=args.batch_size, threads=args.threads)
        mirror_rates: list[float] = []
        batchwrite_rates: list[float] = []
        client_rates: list[float] = []

        def mirror_pass(round_no: int) -> None:
            # an empty emulator and no mirror state: a true first sync
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

        def raw_pass(round_no: int, mode: str) -> None:
            rates, label = {
                "batchwrite": (batchwrite_rates, "BatchWrite RPC, mirror's encoder"),
                "client": (client_rates, "WriteBatch, Commit RPC"),
            }[mode]
            clear_emulator(host, PROJECT)
            seconds, documents = raw_write_seconds(
                engine, client, args.batch_size, args.threads, mode=mode
            )
            rates.append(documents / seconds)
            print(
                f"[{round_no}] raw writes ({label}, {args.threads} in flight): {documents} "
                f"docs in {seconds:.1f}s = {rates[-1]:,.0f} docs/s"
            )

        for round_no in range(1, args.rounds + 1):
            # odd rounds: mirror, BatchWrite, WriteBatch; even rounds the reverse, so the
            # emulator's drift over a run (it slows as documents come and go) favours no side
            if round_no % 2:
                mirror_pass(round_no)
                raw_pass(round_no, "batchwrite")
                raw_pass(round_no, "client")
            else:
                raw_pass(round_no, "client")
                raw_pass(round_no, "batchwrite")
                mirror_pass(round_no)
        mirror_rate = statistics.median(mirror_rates)
        batchwrite_rate = statistics.median(batchwrite_rates)
        client_rate = statistics.median(client_rates)
        print(
            f"median over {args.rounds} rounds: mirror {mirror_rate:,.0f} docs/s, "
            f"raw BatchWrite {batchwrite_rate:,.0f} docs/s, "
            f"raw WriteBatch {client_rate:,.0f} docs/s"
        )
        print(
            f"ratio mirror/raw BatchWrite (same RPC, same {args.threads} requests in flight): "
            f"{mirror_rate / batchwrite_rate:.2f} (target >= 0.8)"
        )
        print(f"ratio mirror/raw WriteBatch (Commit RPC): {mirror_rate / client_rate:.2f}")
    finally:
        emulator.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
