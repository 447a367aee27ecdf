"""What the change-log triggers (sql/0015_customer_changes.sql) cost a bulk load.

Loads the same mapped Shopify customers (customers, customer_sources, customer_addresses) into
fresh databases with the change triggers on and off, alternating, and prints the load stage's
wall and CPU seconds (the loader process plus PostgreSQL: steadier than wall on a shared
machine) and the ratios. Issue 18 item 2 allows a few percent before explicit inserts would pay.

Run:  python bench/bench_change_log.py [--customers 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ingest import read_mapped, store_for  # noqa: E402
from bench_receiver import cpu_seconds, postmaster_pid  # noqa: E402

from crm_pipeline.db.engine import make_engine  # noqa: E402
from crm_pipeline.db.migrate import migrate  # noqa: E402
from crm_pipeline.db.server import EmbeddedPostgres  # noqa: E402
from crm_pipeline.ingest.customers import CustomerLoader  # noqa: E402

TABLES = ("customers", "customer_sources", "customer_addresses", "orders",
          "customer_activities", "customer_segments")  # fmt: skip


def load(
    server: EmbeddedPostgres, records: list, name: str, triggers: bool
) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (this process plus PostgreSQL) and change rows of one load."""
    dsn = server.create_database(name)
    migrate(dsn)
    engine = make_engine(dsn)
    if not triggers:
        with engine.begin() as conn:
            for table in TABLES:
                for kind in ("ins", "upd", "del"):
                    # fixed names from TABLES
                    conn.execute(
                        sa.text(f"ALTER TABLE {table} DISABLE TRIGGER {table}_changes_{kind}")
                    )
    pg = postmaster_pid(server.root)
    cpu = time.process_time() + cpu_seconds(pg)
    started = time.perf_counter()
    CustomerLoader(engine, origin="api pull", defer_indexes=True).load(records)
    elapsed = time.perf_counter() - started
    # measured before the pool closes: a backend's CPU leaves the tree with it
    cpu = time.process_time() + cpu_seconds(pg) - cpu
    with engine.connect() as conn:
        logged = conn.execute(sa.text("SELECT count(*) FROM customer_changes")).scalar_one()
    engine.dispose()
    return elapsed, cpu, logged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    records = read_mapped(store_for(args.customers))
    on: list[float] = []
    off: list[float] = []
    cpu_on: list[float] = []
    cpu_off: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-changes-") as root:
        server = EmbeddedPostgres(Path(root))
        server.start()
        try:
            for round_no in range(args.rounds):
                for triggers in (round_no % 2 == 0, round_no % 2 != 0):
                    name = f"bench_changes_{round_no}_{'on' if triggers else 'off'}"
                    seconds, cpu, logged = load(server, records, name, triggers)
                    (on if triggers else off).append(seconds)
                    (cpu_on if triggers else cpu_off).append(cpu)
                    print(
                        f"round {round_no + 1} triggers {'on ' if triggers else 'off'}: "
                        f"{seconds:6.2f}s, {cpu:6.2f} CPU s ({len(records) / seconds:,.0f} rows/s, "
                        f"{logged:,} change rows)",
                        flush=True,
                    )
        finally:
            server.stop()
    med_on, med_off = statistics.median(on), statistics.median(off)
    c_on, c_off = statistics.median(cpu_on), statistics.median(cpu_off)
    print(
        f"load stage, {len(records):,} customers (medians): wall on {med_on:.2f}s / off "
        f"{med_off:.2f}s = {med_on / med_off:.3f}; CPU (loader + PostgreSQL) on {c_on:.2f}s / "
        f"off {c_off:.2f}s = {c_on / c_off:.3f}"
    )


if __name__ == "__main__":
    main()
