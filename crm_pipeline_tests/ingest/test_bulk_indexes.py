"""Initial loads defer the search/analyst indexes and always get them back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from crm_pipeline.db.bulk_indexes import DEFERRABLE_INDEXES, restore_deferred_indexes
from crm_pipeline.db.migrate import migrate
from crm_pipeline.ingest.customers import CustomerLoader
from crm_pipeline.mapping.records import CustomerRecord
from crm_pipeline.mapping.shopify import map_customer
from crm_pipeline_tests.ingest.test_customer_loader import shopify

CUSTOMER_INDEXES = set(DEFERRABLE_INDEXES["customers"])


def present(engine: sa.Engine, table: str = "customers") -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.text("SELECT indexname FROM pg_indexes WHERE tablename = :t"), {"t": table}
            ).scalars()
        )


def records(engine: sa.Engine, n: int, seen: list[set[str]]) -> Iterator[CustomerRecord]:
    for i in range(1, n + 1):
        if i == n // 2:
            seen.append(present(engine))  # what the table had in the middle of the load
        yield map_customer(shopify(i, f"p{i}@x.io", phone=f"+1512555{i:04d}"))


def test_initial_load_defers_and_rebuilds_indexes(clean_db: sa.Engine) -> None:
    seen: list[set[str]] = []
    loader = CustomerLoader(clean_db, origin="api pull", defer_indexes=True)
    loader.load(records(clean_db, 600, seen), chunk_size=100)
    assert loader.report.inserted == 600
    assert loader.report.deferred_indexes == len(CUSTOMER_INDEXES) + 1  # + addresses' index
    assert not (seen[0] & CUSTOMER_INDEXES)  # gone during the load
    assert CUSTOMER_INDEXES <= present(clean_db)  # back after it
    assert "customer_addresses_customer_idx" in present(clean_db, "customer_addresses")
    with clean_db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM deferred_indexes")).scalar() == 0
        # the rebuilt trigram index answers the search it exists for
        conn.exec_driver_sql("SET enable_seqscan = off")
        plan = (
            conn.execute(
                sa.text("EXPLAIN SELECT id FROM customers WHERE email_lowercase % 'p42@x.io'")
            )
            .scalars()
            .all()
        )
        assert any("customers_email_trgm" in line for line in plan), plan


def test_a_load_into_a_populated_table_keeps_its_indexes(clean_db: sa.Engine) -> None:
    CustomerLoader(clean_db, origin="api pull").load(records(clean_db, 1200, []))
    seen: list[set[str]] = []
    loader = CustomerLoader(clean_db, origin="api pull", defer_indexes=True)
    loader.load(records(clean_db, 400, seen), chunk_size=100)
    assert loader.report.deferred_indexes == 0
    assert CUSTOMER_INDEXES <= seen[0]


def test_a_failing_load_still_rebuilds(clean_db: sa.Engine) -> None:
    def broken() -> Iterator[CustomerRecord]:
        yield from records(clean_db, 300, [])
        raise RuntimeError("source connection lost")

    with pytest.raises(RuntimeError, match="connection lost"):
        CustomerLoader(clean_db, origin="api pull", defer_indexes=True).load(
            broken(), chunk_size=100
        )
    assert CUSTOMER_INDEXES <= present(clean_db)


def test_indexes_left_by_a_dead_load_come_back(clean_db: sa.Engine, database_url: str) -> None:
    # what a load killed with SIGKILL leaves: the definition saved, the index dropped
    with clean_db.begin() as conn:
        definition = conn.execute(
            sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = 'customers_email_trgm'")
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO deferred_indexes (index_name, table_name, definition) "
                "VALUES ('customers_email_trgm', 'customers', :d)"
            ),
            {"d": definition},
        )
        conn.exec_driver_sql("DROP INDEX customers_email_trgm")
    assert "customers_email_trgm" not in present(clean_db)
    migrate(database_url)  # `db migrate` and every pipeline start
    assert "customers_email_trgm" in present(clean_db)
    assert restore_deferred_indexes(clean_db) == 0
