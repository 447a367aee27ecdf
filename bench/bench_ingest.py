"""Ingestion throughput: the whole path, the load stage, a plain COPY and dlt, in one run.

For each size N (customers) this prints rows/s of:
  whole ingestion  sandbox API (bulk operation, JSONL stream) -> SDK client -> map ->
                   validate (pandera) -> normalise -> resolve identity -> upsert (COPY + merge)
  load stage       the same records already mapped in memory -> validate, resolve, upsert
  plain COPY       the same customer JSON lines COPYed into a one-column jsonb table
                   (the physical limit of getting these rows into PostgreSQL)
  schema COPY      the rows the load stage wrote (customers, customer_sources,
                   customer_addresses) COPYed again into an empty, fully indexed schema: the
                   limit for *this* schema, whatever the pipeline does before the write
  dlt              dlt loading the same customers.jsonl into the same PostgreSQL
                   (the tool users would pick instead; `pip install 'dlt[postgres]'`)

  streams          (--streams) Klaviyo profiles, Shopify orders, Klaviyo events and a file
                   import the same way, each against its own schema-COPY limit; profiles and
                   the import mapped in process and in the decoding workers
                   (bench/ingest_streams.py)

Run:  python bench/bench_ingest.py --customers 100000 1000000 [--dlt-max 100000] [--streams]
Every figure comes from the same machine in the same run; ratios are printed against COPY.
The whole ingestion also prints its rate from the first record on (the wait for the sandbox to
build the bulk file is Shopify's time, not the pipeline's) and the CPU seconds per 1,000
customers of the pipeline process, PostgreSQL and the sandbox: on 2 cores the sum bounds the
rate.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import sqlalchemy as sa
from psycopg import sql as psql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crm_pipeline.db.copy import copy_rows  # noqa: E402
from crm_pipeline.db.engine import make_engine  # noqa: E402
from crm_pipeline.db.migrate import migrate  # noqa: E402
from crm_pipeline.db.server import EmbeddedPostgres  # noqa: E402
from crm_pipeline.ingest.customers import CustomerLoader  # noqa: E402
from crm_pipeline.ingest.workers import decode_in_workers, worker_pids  # noqa: E402
from crm_pipeline.mapping.shopify import map_bulk_customer_line, map_customer  # noqa: E402
from crm_pipeline.sandbox.generate import generate_store  # noqa: E402
from crm_pipeline.sources.shopify import ShopifyClient  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from bench_receiver import cpu_seconds, postmaster_pid  # noqa: E402
from ingest_streams import stream_ingestion  # noqa: E402

OUT = ROOT / "bench" / "out"


def store_for(n: int) -> Path:
    store = OUT / f"store-{n}"
    if not (store / "store.json").exists():
        print(f"  generating a {n:,}-customer store in {store} ...", flush=True)
        started = time.perf_counter()
        generate_store(store, customers=n, seed=1)
        print(f"  generated in {time.perf_counter() - started:.0f}s", flush=True)
    return store


def fresh_db(server: EmbeddedPostgres, name: str) -> str:
    dsn = server.create_database(name)
    migrate(dsn)
    return dsn


def whole_ingestion(server: EmbeddedPostgres, store: Path) -> dict[str, float]:
    dsn = fresh_db(server, "bench_whole")
    engine = make_engine(dsn)
    # The sandbox runs in its own process, as Shopify would: in-process it would compete with
    # the pipeline for the interpreter lock and understate the pipeline.
    port = free_port()
    sandbox = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crm_pipeline.cli",
            "sandbox",
            "serve",
            "--store",
            str(store),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        client = ShopifyClient("bench", "token", api_url=f"http://127.0.0.1:{port}")
        first: list[float] = []

        def pulled():
            # the path of the shopify_customers asset's full refresh (defs/shopify/assets.py)
            lines = client.bulk_customer_lines()
            for record in decode_in_workers(lines, map_bulk_customer_line):
                if not first:
                    first.append(time.perf_counter())
                yield record

        pg = postmaster_pid(server.root)
        cpu0 = (time.process_time(), cpu_seconds(pg), cpu_seconds(sandbox.pid), workers_cpu())
        started = time.perf_counter()
        loader = CustomerLoader(
            engine, origin="api pull", reconcile_run_id="bench", defer_indexes=True
        )
        report = loader.load(pulled())
        elapsed = time.perf_counter() - started
        cpu1 = (time.process_time(), cpu_seconds(pg), cpu_seconds(sandbox.pid), workers_cpu())
    finally:
        sandbox.terminate()
        sandbox.wait(30)
    engine.dispose()
    n = report.received
    per_k = [(b - a) / n * 1000 for a, b in zip(cpu0, cpu1, strict=True)]
    return {
        "rows": n,
        "seconds": elapsed,
        "wait_bulk": (first[0] - started) if first else 0.0,
        "after_first_seconds": (started + elapsed) - first[0] if first else elapsed,
        "cpu_pipeline": per_k[0] + per_k[3],
        "cpu_workers": per_k[3],
        "cpu_postgres": per_k[1],
        "cpu_sandbox": per_k[2],
    }


def workers_cpu() -> float:
    """CPU seconds of the decoding worker processes (ingest/workers.py) so far."""
    return sum(cpu_seconds(pid) for pid in worker_pids())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"sandbox did not listen on {port}")


def read_mapped(store: Path) -> list:
    with (store / "shopify" / "customers.jsonl").open("rb") as fh:
        return [map_customer(orjson.loads(line)) for line in fh]


def load_stage(server: EmbeddedPostgres, records: list) -> tuple[int, float]:
    dsn = fresh_db(server, "bench_load")
    engine = make_engine(dsn)
    started = time.perf_counter()
    report = CustomerLoader(engine, origin="api pull", defer_indexes=True).load(records)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return report.received, elapsed


SCHEMA_TABLES = ("customers", "customer_sources", "customer_addresses")


def schema_copy(server: EmbeddedPostgres) -> tuple[int, float]:
    """COPY what the load stage wrote into a fresh, fully indexed schema: this schema's limit.

    Generated and identity columns are left to the server, as in a real load.
    """
    source = make_engine(server.dsn("bench_load"))
    dumps: dict[str, tuple[list[str], bytes]] = {}
    with source.connect() as conn:
        raw = conn.connection.driver_connection
        for table in SCHEMA_TABLES:
            columns = (
                conn.execute(
                    sa.text(
                        "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) "
                        "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' "
                        "AND attidentity = '' ORDER BY attnum"
                    ),
                    {"t": table},
                )
                .scalars()
                .all()
            )
            statement = psql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
                psql.SQL(", ").join(map(psql.Identifier, columns)), psql.Identifier(table)
            )
            with raw.cursor() as cur, cur.copy(statement) as copy:
                dumps[table] = (columns, b"".join(bytes(block) for block in copy))
    source.dispose()
    engine = make_engine(fresh_db(server, "bench_schema_copy"))
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql("SET CONSTRAINTS ALL DEFERRED")
        raw = conn.connection.driver_connection
        for table in SCHEMA_TABLES:
            columns, data = dumps[table]
            statement = psql.SQL("COPY {} ({}) FROM STDIN").format(
                psql.Identifier(table), psql.SQL(", ").join(map(psql.Identifier, columns))
            )
            with raw.cursor() as cur, cur.copy(statement) as copy:
                copy.write(data)
        rows = conn.execute(sa.text("SELECT count(*) FROM customers")).scalar_one()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return rows, elapsed


def plain_copy(server: EmbeddedPostgres, store: Path) -> tuple[int, float]:
    dsn = fresh_db(server, "bench_copy")
    engine = make_engine(dsn)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE raw_customers (data jsonb NOT NULL)")
    started = time.perf_counter()
    with engine.begin() as conn, (store / "shopify" / "customers.jsonl").open("rb") as fh:
        rows = copy_rows(conn, "raw_customers", ("data",), ((line.decode(),) for line in fh))
    elapsed = time.perf_counter() - started
    engine.dispose()
    return rows, elapsed


DLT_SCRIPT = """
import sys, time, orjson, dlt
path, dsn, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
def customers():
    with open(path, "rb") as fh:
        for i, line in enumerate(fh):
            if i >= limit:
                break
            yield orjson.loads(line)
resource = dlt.resource(customers, name="customers", primary_key="id", write_disposition="merge")
pipeline = dlt.pipeline(pipeline_name="bench_dlt", destination=dlt.destinations.postgres(dsn),
                        dataset_name="shopify", pipelines_dir=sys.argv[4])
started = time.perf_counter()
info = pipeline.run(resource)
print(time.perf_counter() - started)
"""


def dlt_load(server: EmbeddedPostgres, store: Path, limit: int) -> tuple[int, float] | None:
    try:
        import dlt  # noqa: F401
    except ImportError:
        print("  dlt not installed (pip install 'dlt[postgres]'): skipped")
        return None
    server.create_database("bench_dlt")
    # dlt wants host and password in the URL: the socket folder (URL-encoded) and a dummy
    # password (the embedded server trusts local connections)
    from urllib.parse import quote

    dsn = f"postgresql://postgres:unused@{quote(str(server.socket_dir), safe='')}/bench_dlt"
    workdir = Path(tempfile.mkdtemp(prefix="dlt-"))
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                DLT_SCRIPT,
                str(store / "shopify" / "customers.jsonl"),
                dsn,
                str(limit),
                str(workdir),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=3600,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if result.returncode != 0:
        print("  dlt failed:", result.stderr[-2000:])
        return None
    return limit, float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000])
    parser.add_argument(
        "--dlt-max",
        type=int,
        default=100_000,
        help="dlt loads at most this many rows per size (it is slow)",
    )
    parser.add_argument(
        "--streams",
        action="store_true",
        help="also Klaviyo profiles, Shopify orders and Klaviyo events, in process and in workers",
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="crmbench-pg-", dir="/tmp"))
    server = EmbeddedPostgres(root)
    server.start()
    try:
        for n in args.customers:
            store = store_for(n)
            print(f"\n== {n:,} Shopify customers ==", flush=True)
            copy_n, copy_s = plain_copy(server, store)
            copy_rate = copy_n / copy_s
            print(
                f"plain COPY        {copy_rate:>10,.0f} rows/s  ({copy_n:,} rows in {copy_s:.1f}s)",
                flush=True,
            )
            whole = whole_ingestion(server, store)
            whole_rate = whole["rows"] / whole["seconds"]
            print(
                f"whole ingestion   {whole_rate:>10,.0f} rows/s  ({whole['seconds']:.1f}s; "
                f"{whole_rate / copy_rate:.2f} x COPY)",
                flush=True,
            )
            print(
                f"  from the first record {whole['rows'] / whole['after_first_seconds']:>8,.0f} "
                f"rows/s  (the sandbox built the bulk file in {whole['wait_bulk']:.1f}s first)"
            )
            cpu_sum = whole["cpu_pipeline"] + whole["cpu_postgres"] + whole["cpu_sandbox"]
            print(
                f"  CPU s per 1k customers: pipeline {whole['cpu_pipeline']:.3f} (decoding "
                f"workers {whole['cpu_workers']:.3f} of it), PostgreSQL "
                f"{whole['cpu_postgres']:.3f}, sandbox {whole['cpu_sandbox']:.3f} "
                f"(sum {cpu_sum:.3f} on {os.cpu_count()} cores)",
                flush=True,
            )
            records = read_mapped(store)
            load_n, load_s = load_stage(server, records)
            del records
            gc.collect()
            load_rate = load_n / load_s
            print(
                f"load stage        {load_rate:>10,.0f} rows/s  ({load_s:.1f}s; "
                f"{load_rate / copy_rate:.2f} x COPY; target >= 0.5)",
                flush=True,
            )
            schema_n, schema_s = schema_copy(server)
            schema_rate = schema_n / schema_s
            print(
                f"schema COPY       {schema_rate:>10,.0f} rows/s  ({schema_s:.1f}s; "
                f"{schema_rate / copy_rate:.2f} x COPY; load stage = "
                f"{load_rate / schema_rate:.2f} x this, whole ingestion "
                f"{whole_rate / schema_rate:.2f} x this)",
                flush=True,
            )
            if args.streams:
                fresh_db(server, "bench_empty")
                stream_ingestion(
                    server, store, "bench_whole", "bench_empty", free_port, wait_for_port
                )
            dlt_result = dlt_load(server, store, min(n, args.dlt_max))
            if dlt_result:
                dlt_n, dlt_s = dlt_result
                dlt_rate = dlt_n / dlt_s
                print(
                    f"dlt (merge)       {dlt_rate:>10,.0f} rows/s  ({dlt_n:,} rows in "
                    f"{dlt_s:.1f}s)",
                    flush=True,
                )
                print(f"whole ingestion / dlt = {whole_rate / dlt_rate:.1f} x (target >= 5)")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
