"""COPY rows into a table through the connection of a SQLAlchemy transaction.

Rows are formatted into COPY's text format here rather than by psycopg's `write_row`: for the
wide rows of the loaders (kilobytes of JSON per row) the per-value adaptation in `write_row`
cost more than the server's COPY itself. JSON columns are best passed as `bytes` from
`orjson.dumps` (already UTF-8, never containing raw tabs or newlines).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import sqlalchemy as sa
from psycopg import sql

_NULL = b"\\N"
_FLUSH_BYTES = 1 << 20


def _escape(data: bytes) -> bytes:
    """COPY text escaping: backslash, and the tab/newline/CR that would end a field or row."""
    if b"\\" in data:
        data = data.replace(b"\\", b"\\\\")
    if b"\t" in data:
        data = data.replace(b"\t", b"\\t")
    if b"\n" in data:
        data = data.replace(b"\n", b"\\n")
    if b"\r" in data:
        data = data.replace(b"\r", b"\\r")
    return data


def copy_json(data: bytes) -> bytes:
    """JSON text from orjson as a COPY field: orjson escapes control characters, so only the
    backslash of JSON escapes needs doubling (a quarter of `_escape`'s scans)."""
    return data.replace(b"\\", b"\\\\") if b"\\" in data else data


def _array_element(value: Any) -> str:
    if value is None:
        return "NULL"
    text = value if isinstance(value, str) else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def copy_field(value: Any) -> bytes:
    """One value in COPY text format (NULL as \\N); lists become PostgreSQL array literals."""
    if value is None:
        return _NULL
    if isinstance(value, str):
        return _escape(value.encode())
    if isinstance(value, bytes):
        return _escape(value)
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, int | float | Decimal | UUID):
        return str(value).encode()
    if isinstance(value, datetime | date | time):
        return value.isoformat().encode()
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return _escape(("{" + ",".join(_array_element(v) for v in items) + "}").encode())
    if isinstance(value, dict):
        return _escape(orjson.dumps(value, default=str))
    if hasattr(value, "item"):  # numpy scalars from the analytics frames
        return copy_field(value.item())
    raise TypeError(f"no COPY format for {type(value).__name__}")


def copy_text_fields(values: Sequence[Any]) -> bytes:
    """`values` tab-joined in COPY text format (no newline), for rows of text, NULLs, booleans
    and numbers: one escaping probe over the whole row instead of one per field, which made
    the per-field `copy_field` calls the costliest part of encoding an address row."""
    parts: list[str] = []
    texts: list[str] = []
    for value in values:
        kind = type(value)
        if value is None:
            parts.append("\\N")
        elif kind is str:
            parts.append(value)
            texts.append(value)
        elif kind is bool:
            parts.append("t" if value else "f")
        elif kind is int or kind is float:
            parts.append(repr(value))
        else:
            return _fields(values)
    probe = "".join(texts)
    if "\\" in probe or "\t" in probe or "\n" in probe or "\r" in probe:
        return _fields(values)
    return "\t".join(parts).encode()


def _fields(values: Sequence[Any]) -> bytes:
    return b"\t".join([copy_field(v) for v in values])


def text_array(items: Iterable[str]) -> str:
    """A PostgreSQL text[] literal, bound as one string and cast in SQL (`CAST(:x AS text[])`):
    psycopg adapts a Python list element by element, which showed in the load's profile."""
    values = list(items)
    if not values:
        return "{}"
    joined = '","'.join(values)
    if "\\" in joined or joined.count('"') != 2 * (len(values) - 1):
        return "{" + ",".join(_array_element(v) for v in values) + "}"
    return '{"' + joined + '"}'


def copy_rows(
    conn: sa.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Stream rows with COPY FROM STDIN inside `conn`'s transaction; returns the row count."""
    return copy_lines(conn, table, columns, (copy_line(row) for row in rows))


def copy_line(row: Sequence[Any]) -> bytes:
    """One row in COPY text format, newline included."""
    return _fields(row) + b"\n"


def copy_lines(
    conn: sa.Connection, table: str, columns: Sequence[str], lines: Iterable[bytes]
) -> int:
    """COPY rows already in COPY text format (see `copy_line`), written in 1 MiB blocks."""
    raw = conn.connection.driver_connection
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    count = 0
    block: list[bytes] = []
    size = 0
    with raw.cursor() as cur, cur.copy(statement) as copy:
        for line in lines:
            block.append(line)
            size += len(line)
            count += 1
            if size >= _FLUSH_BYTES:
                copy.write(b"".join(block))
                block, size = [], 0
        if block:
            copy.write(b"".join(block))
    return count


def create_temp_table(conn: sa.Connection, name: str, columns_sql: str) -> None:
    """A temp table dropped at commit: staging for one chunk's merge."""
    conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({columns_sql}) ON COMMIT DROP")  # static DDL
