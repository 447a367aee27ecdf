"""COPY rows into a table through the connection of a SQLAlchemy transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from psycopg import sql


def copy_rows(
    conn: sa.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Stream rows with COPY FROM STDIN inside `conn`'s transaction; returns the row count."""
    raw = conn.connection.driver_connection
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    count = 0
    with raw.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def create_temp_table(conn: sa.Connection, name: str, columns_sql: str) -> None:
    """A temp table dropped at commit: staging for one chunk's merge."""
    conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({columns_sql}) ON COMMIT DROP")  # static DDL
