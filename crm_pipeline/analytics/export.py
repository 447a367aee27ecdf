"""Export of filtered customers with their metrics, streamed from a server-side cursor.

Rows come from customer_360 joined to filter_customers(filters), the same filters search uses,
in customer id order, and are written chunk by chunk so memory stays flat for any size.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import orjson
import sqlalchemy as sa

from crm_pipeline.analytics.search import filters_json

log = logging.getLogger(__name__)

ExportFormat = Literal["csv", "jsonl", "parquet"]
CHUNK_ROWS = 5000

#: Columns written, in order (customer_360 minus the per-source sync map).
EXPORT_COLUMNS = (
    "customer_id", "email", "phone_normalized", "first_name", "last_name", "full_name",
    "status", "customer_type", "tags", "accepts_email_marketing", "accepts_sms_marketing",
    "created_at", "last_active_at", "address1", "city", "province", "country", "country_code",
    "zip", "total_orders", "completed_orders", "cancelled_orders", "returned_orders",
    "total_spent", "total_refunded", "net_revenue", "average_order_value", "lifetime_value",
    "items_purchased", "favorite_category", "favorite_brand", "first_order_date",
    "last_order_date", "days_since_last_order", "email_opens", "email_clicks", "open_rate",
    "click_rate", "engagement_score", "churn_probability", "predicted_purchases_90d",
    "predicted_next_order_date", "predicted_ltv", "segments",
)  # fmt: skip


_QUERY = (
    "SELECT "
    + ", ".join(f"v.{c}" for c in EXPORT_COLUMNS)
    + " FROM customer_360 v JOIN filter_customers(CAST(:f AS jsonb)) f"
    " ON f.customer_id = v.customer_id ORDER BY v.customer_id"
)
_COUNT = "SELECT count(*) FROM filter_customers(CAST(:f AS jsonb))"


class ExportError(ValueError):
    """The requested format or destination cannot be written."""


def _parquet_schema() -> Any:
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    money = pa.decimal128(14, 2)
    types: dict[str, Any] = {
        "tags": pa.list_(pa.string()),
        "segments": pa.list_(pa.string()),
        "accepts_email_marketing": pa.bool_(),
        "accepts_sms_marketing": pa.bool_(),
        "created_at": ts,
        "last_active_at": ts,
        "first_order_date": ts,
        "last_order_date": ts,
        "predicted_next_order_date": pa.date32(),
        "open_rate": pa.float64(),
        "click_rate": pa.float64(),
        "engagement_score": pa.float64(),
        "churn_probability": pa.float64(),
        "predicted_purchases_90d": pa.float64(),
    }
    for c in ("total_spent", "total_refunded", "net_revenue", "average_order_value",
              "lifetime_value", "predicted_ltv"):  # fmt: skip
        types[c] = money
    integers = (
        "total_orders", "completed_orders", "cancelled_orders", "returned_orders",
        "items_purchased", "days_since_last_order", "email_opens", "email_clicks",
    )  # fmt: skip
    for c in integers:
        types[c] = pa.int64()
    return pa.schema([(c, types.get(c, pa.string())) for c in EXPORT_COLUMNS])


def _chunks(conn: sa.Connection, filters: str) -> Iterator[Sequence[sa.Row]]:
    result = conn.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(
        sa.text(_QUERY), {"f": filters}
    )
    yield from result.partitions(CHUNK_ROWS)


#: A spreadsheet reads a cell starting with one of these as a formula (or strips it first).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(value: Any) -> Any:
    if isinstance(value, list):
        value = ";".join(str(v) for v in value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        # OWASP CSV injection: a leading quote makes the cell text ("=HYPERLINK(...)" in a name,
        # "+44..." phones too); numbers are written as numbers and cannot be formulas
        return "'" + value
    return "" if value is None else value


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError


def export_customers(
    bind: sa.Engine,
    out: Path,
    format: ExportFormat = "csv",
    filters: dict[str, Any] | None = None,
    progress: bool = False,
) -> int:
    """Write the filtered live customers with their metrics to `out`; returns the row count.

    csv: lists joined with ';', text cells that a spreadsheet would run as a formula prefixed
    with a single quote; jsonl: one JSON object per line; parquet: typed columns.
    The file is written to a temporary name and renamed, so a failed export leaves no half file.
    """
    if format not in ("csv", "jsonl", "parquet"):
        raise ExportError(f"unknown export format {format!r}: use csv, jsonl or parquet")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    f = filters_json(filters)
    written = 0
    bar = None
    with bind.connect() as conn, conn.begin():
        if progress:
            from rich.progress import Progress

            total = conn.execute(sa.text(_COUNT), {"f": f}).scalar_one()
            bar = Progress(transient=False)
            bar.start()
            task = bar.add_task(f"exporting {out.name}", total=total)
        try:
            writer = _Writer(tmp, format)
            try:
                for chunk in _chunks(conn, f):
                    writer.write(chunk)
                    written += len(chunk)
                    if bar is not None:
                        bar.update(task, advance=len(chunk))
            finally:
                writer.close()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            if bar is not None:
                bar.stop()
    tmp.replace(out)
    log.info("exported %d customers to %s (%s)", written, out, format)
    return written


class _Writer:
    """One output file; knows how to append a chunk of rows in its format."""

    def __init__(self, path: Path, format: ExportFormat) -> None:
        self.format = format
        self._parquet = None
        if format == "parquet":
            import pyarrow.parquet as pq

            self._schema = _parquet_schema()
            self._parquet = pq.ParquetWriter(str(path), self._schema, compression="zstd")
            self._file = None
        else:
            self._file = path.open("w", encoding="utf-8", newline="")
            if format == "csv":
                self._csv = csv.writer(self._file)
                self._csv.writerow(EXPORT_COLUMNS)

    def write(self, rows: Sequence[sa.Row]) -> None:
        if self.format == "csv":
            self._csv.writerows([_csv_value(v) for v in row] for row in rows)
        elif self.format == "jsonl":
            assert self._file is not None
            for row in rows:
                record = dict(zip(EXPORT_COLUMNS, row, strict=True))
                self._file.write(
                    orjson.dumps(
                        record, default=_json_default, option=orjson.OPT_NON_STR_KEYS
                    ).decode()
                    + "\n"
                )
        else:
            import pyarrow as pa

            columns = list(zip(*rows, strict=True)) if rows else [[] for _ in EXPORT_COLUMNS]
            arrays = []
            for name, values in zip(EXPORT_COLUMNS, columns, strict=True):
                values = list(values)
                if self._schema.field(name).type == pa.string():
                    values = [None if v is None else str(v) for v in values]
                elif self._schema.field(name).type == pa.float64():
                    values = [None if v is None else float(v) for v in values]
                arrays.append(pa.array(values, type=self._schema.field(name).type))
            assert self._parquet is not None
            self._parquet.write_table(pa.Table.from_arrays(arrays, schema=self._schema))

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._file is not None:
            self._file.close()
