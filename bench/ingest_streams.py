"""The whole ingestion of Klaviyo profiles, Shopify orders, Klaviyo events and a customer file
import against the schema-COPY limit (bench_ingest.py `--streams`; issue 18 item 6).

Each API stream is pulled from the sandbox (its own process, Klaviyo rate limits and Shopify
throttling off: this measures the pipeline, not the API budget) and loaded as its full-refresh
asset loads it, into a copy of the database as the previous stream left it (the first starts
from the Shopify customers the whole customer ingestion loaded). The import loads the store's
customers.jsonl with `import_file` into an empty database. Modes, in the same run:
  in_process  mapping in the loading process (profiles and imports before item 6; orders and
              events always: their mapping costs less than a trip to a worker)
  workers     mapped and encoded in the decoding workers (ingest/workers.py), as the code
              now does for profiles and imports
The limit is the rows the load wrote to the stream's tables (the inserts) COPYed into a copy of
the same starting database: indexes, constraints and triggers in place.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from psycopg import sql as psql

from crm_pipeline.db.engine import make_engine
from crm_pipeline.db.server import EmbeddedPostgres
from crm_pipeline.ingest import workers
from crm_pipeline.ingest.activities import ActivityLoader
from crm_pipeline.ingest.bad_records import mapped
from crm_pipeline.ingest.base import Loader
from crm_pipeline.ingest.customers import CustomerLoader
from crm_pipeline.ingest.files import import_file
from crm_pipeline.ingest.orders import OrderLoader
from crm_pipeline.mapping.klaviyo import METRIC_ACTIVITY, map_event, map_profile
from crm_pipeline.mapping.shopify import map_order
from crm_pipeline.sources.klaviyo import KlaviyoClient
from crm_pipeline.sources.shopify import ShopifyClient

MODES = ("in_process", "workers")
SANDBOX = """
import sys, time
from pathlib import Path
from crm_pipeline.sandbox.server import SandboxServer
with SandboxServer(Path(sys.argv[1]), port=int(sys.argv[2]), klaviyo_rate_limits=False,
                   throttle=False):
    time.sleep(86400)
"""
# stream -> (table, WHERE clause picking the rows it wrote) in COPY order (foreign keys)
STREAM_ROWS: dict[str, list[tuple[str, str]]] = {
    "klaviyo profiles": [
        (
            "customers",
            "NOT EXISTS (SELECT 1 FROM customer_sources s WHERE s.customer_id = customers.id "
            "AND s.source <> 'klaviyo')",
        ),
        ("customer_sources", "source = 'klaviyo'"),
        ("customer_addresses", "source = 'klaviyo'"),
    ],
    "shopify orders": [("orders", "true"), ("order_line_items", "true")],
    "klaviyo events": [("customer_activities", "true")],
    "file import": [
        ("customers", "true"),
        ("customer_sources", "source = 'manual'"),
        ("customer_addresses", "source = 'manual'"),
    ],
}
# the streams whose mapping runs in the workers
IN_WORKERS = ("klaviyo profiles", "file import")


def _records(stream: str, mode: str, url: str) -> Iterable[Any]:
    if stream == "shopify orders":
        shopify = ShopifyClient("bench", "token", api_url=url)
        return mapped(shopify.bulk_orders(), map_order, "shopify")
    klaviyo = KlaviyoClient("pk_bench", api_url=url)
    if stream == "klaviyo profiles":
        run = workers.map_in_workers if mode == "workers" else mapped
        return run(klaviyo.profiles(), map_profile, "klaviyo")
    names = klaviyo.metrics()
    events = klaviyo.events(None, metric_names=set(METRIC_ACTIVITY))
    return mapped(events, partial(map_event, metric_names=names), "klaviyo")


def _load(stream: str, mode: str, engine: sa.Engine, store: Path, url: str) -> int:
    """Records `stream` received, loaded as its asset (or the import command) loads them."""
    if stream != "file import":
        return _loader(stream, engine).load(_records(stream, mode, url)).received
    if mode == "workers":
        return import_file(engine, store / "shopify" / "customers.jsonl").report.received
    count = workers.worker_count
    workers.worker_count = lambda: 1  # decode_in_workers decodes in process on one core
    try:
        return import_file(engine, store / "shopify" / "customers.jsonl").report.received
    finally:
        workers.worker_count = count


def _loader(stream: str, engine: sa.Engine) -> Loader:
    options: dict[str, Any] = {"origin": "api pull", "run_id": "bench", "defer_indexes": True}
    if stream == "klaviyo profiles":
        return CustomerLoader(engine, reconcile_run_id="bench", **options)
    return (OrderLoader if stream == "shopify orders" else ActivityLoader)(engine, **options)


def _clone(server: EmbeddedPostgres, template: str, name: str) -> str:
    admin = make_engine(server.dsn("postgres"))
    with admin.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))  # bench-made names only
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    admin.dispose()
    return server.dsn(name)


def _columns(conn: sa.Connection, table: str) -> list[str]:
    return list(
        conn.execute(
            sa.text(
                "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) "
                "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
            ),
            {"t": table},
        ).scalars()
    )


def _schema_copy(stream: str, written_dsn: str, target_dsn: str) -> float:
    """Seconds to COPY the rows `stream` wrote (in `written_dsn`) into `target_dsn`."""
    dumps: list[tuple[str, list[str], bytes]] = []
    source = make_engine(written_dsn)
    with source.connect() as conn:
        raw = conn.connection.driver_connection
        for table, where in STREAM_ROWS[stream]:
            columns = _columns(conn, table)
            statement = psql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT").format(
                psql.SQL(", ").join(map(psql.Identifier, columns)),
                psql.Identifier(table),
                psql.SQL(where),  # noqa: S608 (constant clauses above)
            )
            with raw.cursor() as cur, cur.copy(statement) as copy:
                dumps.append((table, columns, b"".join(bytes(block) for block in copy)))
    source.dispose()
    engine = make_engine(target_dsn)
    started = time.perf_counter()
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        for table, columns, data in dumps:
            statement = psql.SQL("COPY {} ({}) FROM STDIN").format(
                psql.Identifier(table), psql.SQL(", ").join(map(psql.Identifier, columns))
            )
            with raw.cursor() as cur, cur.copy(statement) as copy:
                copy.write(data)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def stream_ingestion(
    server: EmbeddedPostgres,
    store: Path,
    start_db: str,
    empty_db: str,
    free_port: Callable[[], int],
    wait_for_port: Callable[[int], None],
) -> None:
    """Print, per stream, rows/s in each mode and each as a share of the schema-COPY limit."""
    port = free_port()
    sandbox = subprocess.Popen(
        [sys.executable, "-c", SANDBOX, str(store), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port)
        before = start_db
        for n, stream in enumerate(STREAM_ROWS):
            start = empty_db if stream == "file import" else before
            took: dict[str, tuple[int, float]] = {}
            for mode in MODES if stream in IN_WORKERS else MODES[:1]:
                engine = make_engine(_clone(server, start, f"bench_s{n}_{mode}"))
                started = time.perf_counter()
                received = _load(stream, mode, engine, store, url)
                took[mode] = (received, time.perf_counter() - started)
                engine.dispose()
            written = f"bench_s{n}_{list(took)[-1]}"
            limit_s = _schema_copy(
                stream, server.dsn(written), _clone(server, start, f"bench_s{n}_copy")
            )
            rows = took[list(took)[-1]][0]
            print(f"{stream} ({rows:,} records; schema COPY of what they wrote {limit_s:.1f}s)")
            for mode, (received, seconds) in took.items():
                print(
                    f"  {mode:<11} {received / seconds:>10,.0f} rows/s  ({seconds:.1f}s; "
                    f"{limit_s / seconds:.2f} x schema COPY)",
                    flush=True,
                )
            if stream != "file import":
                before = written
    finally:
        sandbox.terminate()
        sandbox.wait(30)
