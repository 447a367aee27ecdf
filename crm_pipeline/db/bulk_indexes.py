"""Defer secondary indexes during an initial backfill and build them once at the end.

On a 2-core machine the five GIN indexes of `customers` (tags, attributes, three trigram
indexes for search) cost more per inserted row than the row itself; `CREATE INDEX` over the
loaded table is several times cheaper than maintaining them row by row. So a load into an
(almost) empty table drops the indexes no merge needs, records their definitions in
`deferred_indexes`, and rebuilds them when it ends, failed or not. A load killed halfway leaves
the definitions behind; the next load or `db migrate` rebuilds them.

Only indexes the loaders never read are deferred (the merges need the primary keys, the unique
keys, the live-email and phone lookups). While they are missing, search still answers, slowly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import sqlalchemy as sa

log = logging.getLogger(__name__)

# Per table, the indexes a bulk load may drop: search/analyst indexes, none a merge reads.
DEFERRABLE_INDEXES: dict[str, tuple[str, ...]] = {
    "customers": (
        "customers_tags_gin",
        "customers_custom_attributes_gin",
        "customers_full_name_trgm",
        "customers_email_trgm",
        "customers_phone_trgm",
        "customers_status_idx",
        "customers_status_type_created_idx",
        "customers_created_at_idx",
        "customers_created_at_id_idx",
        "customers_last_active_at_idx",
        "customers_updated_at_idx",
    ),
    "customer_addresses": ("customer_addresses_customer_idx",),
    "orders": ("orders_created_at_idx", "orders_updated_at_idx", "orders_customer_created_idx"),
    "order_line_items": ("order_line_items_product_idx",),
    "customer_activities": (
        "customer_activities_type_time_idx",
        "customer_activities_created_at_idx",
        "customer_activities_customer_time_idx",
    ),
}

# A table with more live rows than this is not "initial": its indexes stay (a rebuild would
# block writers for longer than the load saves).
INITIAL_LOAD_MAX_ROWS = 1_000
# One advisory lock for every deferral: one deferring load at a time, and a restorer can tell
# a live deferral (lock held) from one left behind by a dead process (lock free).
_LOCK_KEY = 0x43524D_1D8  # "CRM" + "idx"
_CREATE = re.compile(r"^CREATE (UNIQUE )?INDEX (?!IF NOT EXISTS)")


@contextmanager
def deferred_indexes(engine: sa.Engine, tables: Sequence[str]) -> Iterator[list[str]]:
    """Within the block, the deferrable indexes of those `tables` that are still empty are gone.

    Yields the names dropped (empty when nothing was deferred: a table already holds data, or
    another load holds the deferral lock). The indexes are rebuilt on the way out, also when
    the block raised.
    """
    with engine.connect() as lock_conn:
        got = lock_conn.execute(
            sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_KEY}
        ).scalar_one()
        lock_conn.commit()
        if not got:
            yield []
            return
        try:
            _restore(lock_conn)  # leftovers of a load that died
            dropped = _drop(lock_conn, tables)
            try:
                yield dropped
            finally:
                if dropped:
                    _restore(lock_conn, engine, analyze=tables)
        finally:
            lock_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
            lock_conn.commit()


def restore_deferred_indexes(engine: sa.Engine) -> int:
    """Rebuild indexes a dead load left deferred, unless a live load is still deferring."""
    with engine.connect() as conn:
        got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_KEY}).scalar()
        conn.commit()
        if not got:
            return 0
        try:
            return _restore(conn)
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
            conn.commit()


def _drop(conn: sa.Connection, tables: Sequence[str]) -> list[str]:
    dropped: list[str] = []
    for table in tables:
        names = DEFERRABLE_INDEXES.get(table, ())
        if not names:
            continue
        # a cheap emptiness probe: at most INITIAL_LOAD_MAX_ROWS + 1 rows are read
        rows = conn.execute(
            sa.text(f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT :n) t"),  # name from code
            {"n": INITIAL_LOAD_MAX_ROWS + 1},
        ).scalar_one()
        if rows > INITIAL_LOAD_MAX_ROWS:
            continue
        present = conn.execute(
            sa.text(
                "SELECT indexname, "
                "pg_get_indexdef(format('%I.%I', schemaname, indexname)::regclass) "
                "FROM pg_indexes WHERE schemaname = current_schema() AND tablename = :t "
                "AND indexname = ANY(:names)"
            ),
            {"t": table, "names": list(names)},
        ).all()
        for name, definition in present:
            # the definition is saved in the same transaction as the drop: never one without
            # the other
            conn.execute(
                sa.text(
                    "INSERT INTO deferred_indexes (index_name, table_name, definition) "
                    "VALUES (:n, :t, :d) ON CONFLICT (index_name) DO NOTHING"
                ),
                {"n": name, "t": table, "d": definition},
            )
            conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{name}"')  # name from pg_indexes
            dropped.append(name)
        conn.commit()
    if dropped:
        log.info("initial load: deferred %d indexes until the load ends", len(dropped))
    return dropped


def _analyze(engine: sa.Engine, tables: Sequence[str]) -> None:
    """Complete statistics once the initial load is in: the loaders analysed only their join
    columns, the analytics and analysts' queries plan on the rest."""
    with engine.connect() as conn:
        conn.exec_driver_sql(f"ANALYZE {', '.join(tables)}")  # names from code
        conn.commit()


# Index builds (and the final ANALYZE) run on this many connections at once: each CREATE INDEX
# is one server process on one core, and builds of one table do not block each other.
_BUILDERS = 2


def _restore(
    conn: sa.Connection, engine: sa.Engine | None = None, *, analyze: Sequence[str] = ()
) -> int:
    """Build the indexes listed in `deferred_indexes`; with `engine`, on `_BUILDERS`
    connections at once, the ANALYZE of `analyze` alongside."""
    pending = conn.execute(
        sa.text("SELECT index_name, definition FROM deferred_indexes ORDER BY index_name")
    ).all()
    conn.commit()
    if engine is None:
        _build(conn, pending)
    else:
        # GIN builds are the long ones: deal them out first so each connection gets its share
        order = sorted(pending, key=lambda row: " USING gin " not in row.definition)
        with ThreadPoolExecutor(_BUILDERS, thread_name_prefix="crm-index-build") as pool:
            jobs = [
                pool.submit(_build_on_new_connection, engine, order[i::_BUILDERS])
                for i in range(_BUILDERS)
            ]
            if analyze:
                jobs.append(pool.submit(_analyze, engine, analyze))
            for job in jobs:
                job.result()
    if pending:
        log.info("rebuilt %d deferred indexes", len(pending))
    return len(pending)


def _build_on_new_connection(engine: sa.Engine, pending: Sequence[sa.Row]) -> None:
    with engine.connect() as conn:
        _build(conn, pending)


def _build(conn: sa.Connection, pending: Sequence[sa.Row]) -> None:
    if not pending:
        return
    conn.exec_driver_sql("SET maintenance_work_mem = '256MB'")
    for name, definition in pending:
        # definitions come from pg_get_indexdef of our own indexes, not from input
        conn.exec_driver_sql(_CREATE.sub(r"CREATE \1INDEX IF NOT EXISTS ", definition))
        conn.execute(sa.text("DELETE FROM deferred_indexes WHERE index_name = :n"), {"n": name})
        conn.commit()
    conn.exec_driver_sql("RESET maintenance_work_mem")
    conn.commit()
