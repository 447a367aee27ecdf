"""Load orders and their line items; link them to customers through the source's customer id."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from crm_pipeline.attribution.journey import journey_row
from crm_pipeline.attribution.store import write_journeys
from crm_pipeline.db.copy import copy_rows, create_temp_table
from crm_pipeline.ingest.base import Loader, clamp_ts, refresh_statistics
from crm_pipeline.mapping.records import OrderRecord, content_hash

if TYPE_CHECKING:  # pandas and pandera load with the first validation (fast starts)
    import pandas as pd
    import pandera.pandas as pa


def _schema(now: datetime | None = None) -> pa.DataFrameSchema:
    from crm_pipeline.schemas.records import order_schema

    return order_schema(now)


def _frame(records: list[OrderRecord]) -> pd.DataFrame:
    def qty_min(r: OrderRecord) -> float | None:
        return float(min(li.quantity for li in r.line_items)) if r.line_items else None

    import pandas as pd

    return pd.DataFrame(
        {
            "external_id": pd.Series([r.external_id for r in records], dtype=object),
            "created_at": pd.to_datetime([clamp_ts(r.created_at) for r in records], utc=True),
            "source_updated_at": pd.to_datetime(
                [clamp_ts(r.source_updated_at) for r in records], utc=True
            ),
            "total_price": pd.Series(
                [float(r.total_price) if r.total_price is not None else None for r in records],
                dtype=float,
            ),
            "total_refunded": pd.Series([float(r.total_refunded) for r in records], dtype=float),
            "line_item_quantity_min": pd.Series([qty_min(r) for r in records], dtype=float),
        }
    )


LINK_ORPHAN_ORDERS_SQL = """
UPDATE orders o SET customer_id = s.customer_id
FROM customer_sources s
WHERE o.customer_id IS NULL AND o.customer_external_id IS NOT NULL
  AND s.source = o.source AND s.external_id = o.customer_external_id
"""


def link_orphan_orders(engine: sa.Engine) -> int:
    """Orders that arrived before their customer get linked once the customer is known."""
    with engine.begin() as conn:
        return conn.execute(sa.text(LINK_ORPHAN_ORDERS_SQL)).rowcount


class OrderLoader(Loader):
    """Loads OrderRecords with their line items, linked to customers by the source's id."""

    record_kind = "order"
    report_kind = "orders"
    index_tables = ("orders", "order_line_items")
    schema_factory = staticmethod(_schema)

    def _load_chunk(self, conn: sa.Connection, chunk: list[OrderRecord]) -> None:
        report = self.report
        failures = self._validate(chunk, _frame(chunk))
        rejected = [
            (chunk[i].external_id, chunk[i].raw, reasons) for i, reasons in failures.items()
        ]
        self._quarantine(conn, "shopify", rejected)
        latest: dict[str, OrderRecord] = {}
        for i, r in enumerate(chunk):
            if i in failures:
                continue
            held = latest.get(r.external_id)
            if held is None or r.source_updated_at >= held.source_updated_at:
                latest[r.external_id] = r
        report.duplicates += len(chunk) - len(failures) - len(latest)
        if not latest:
            return
        existing = {
            row.external_id: (row.content_hash, row.source_updated_at)
            for row in conn.execute(
                sa.text(
                    "SELECT external_id, content_hash, source_updated_at FROM orders "
                    "WHERE source = 'shopify' AND external_id = ANY(:ids)"
                ),
                {"ids": list(latest)},
            )
        }
        writes = []
        for ext, r in latest.items():
            digest = content_hash(r.raw)
            held = existing.get(ext)
            if held and (held[0] == digest or (held[1] and r.source_updated_at < held[1])):
                report.unchanged += 1
                continue
            report.updated += int(held is not None)
            report.inserted += int(held is None)
            writes.append((r, digest))
        if not writes:
            return
        create_temp_table(
            conn,
            "stage_orders",
            "external_id text, customer_external_id text, email text, created_at timestamptz, "
            "source_updated_at timestamptz, cancelled_at timestamptz, financial_status text, "
            "fulfillment_status text, total_price numeric, total_refunded numeric, currency text, "
            "content_hash text, line_items jsonb",
        )

        def rows() -> Iterator[tuple[Any, ...]]:
            for r, digest in writes:
                yield (
                    r.external_id,
                    r.customer_external_id,
                    r.email,
                    r.created_at,
                    r.source_updated_at,
                    r.cancelled_at,
                    r.financial_status,
                    r.fulfillment_status,
                    r.total_price,
                    r.total_refunded,
                    r.currency,
                    digest,
                    orjson.dumps([_item(li) for li in r.line_items], default=str),
                )

        copy_rows(
            conn,
            "stage_orders",
            (
                "external_id",
                "customer_external_id",
                "email",
                "created_at",
                "source_updated_at",
                "cancelled_at",
                "financial_status",
                "fulfillment_status",
                "total_price",
                "total_refunded",
                "currency",
                "content_hash",
                "line_items",
            ),
            rows(),
        )
        touched = conn.execute(
            sa.text(
                """
            WITH linked AS (
                SELECT st.*, coalesce(s.customer_id, c.id) AS customer_id
                FROM stage_orders st
                LEFT JOIN customer_sources s
                       ON s.source = 'shopify' AND s.external_id = st.customer_external_id
                LEFT JOIN customers c
                       ON s.customer_id IS NULL AND st.email IS NOT NULL
                      AND c.email_lowercase = st.email AND c.deleted_at IS NULL
            ), upserted AS (
                INSERT INTO orders AS o
                    (customer_id, source, external_id, customer_external_id, email, created_at,
                     source_updated_at, cancelled_at, financial_status, fulfillment_status,
                     total_price, total_refunded, currency, content_hash)
                SELECT customer_id, 'shopify', external_id, customer_external_id, email, created_at,
                       source_updated_at, cancelled_at, financial_status, fulfillment_status,
                       total_price, total_refunded, currency, content_hash
                FROM linked
                ON CONFLICT (source, external_id) DO UPDATE SET
                    customer_id = coalesce(excluded.customer_id, o.customer_id),
                    customer_external_id = excluded.customer_external_id,
                    email = excluded.email, created_at = excluded.created_at,
                    source_updated_at = excluded.source_updated_at,
                    cancelled_at = excluded.cancelled_at,
                    financial_status = excluded.financial_status,
                    fulfillment_status = excluded.fulfillment_status,
                    total_price = excluded.total_price, total_refunded = excluded.total_refunded,
                    currency = excluded.currency, content_hash = excluded.content_hash
                WHERE o.source_updated_at IS NULL
                   OR excluded.source_updated_at >= o.source_updated_at
                RETURNING o.id, o.external_id, o.customer_id, o.created_at
            ), items_gone AS (
                DELETE FROM order_line_items li USING upserted u WHERE li.order_id = u.id
            ), items AS (
                INSERT INTO order_line_items
                    (order_id, external_id, product_id, title, vendor, product_type, quantity,
                     refunded_quantity, price)
                SELECT u.id, x.external_id, x.product_id, x.title, x.vendor, x.product_type,
                       greatest(x.quantity, 0), greatest(coalesce(x.refunded_quantity, 0), 0),
                       greatest(x.price, 0)
                FROM upserted u JOIN stage_orders st ON st.external_id = u.external_id,
                     jsonb_to_recordset(st.line_items) AS x(
                        external_id text, product_id text, title text, vendor text,
                        product_type text, quantity int, refunded_quantity int, price numeric)
                ON CONFLICT (order_id, external_id) DO UPDATE SET
                    product_id = excluded.product_id, title = excluded.title,
                    vendor = excluded.vendor, product_type = excluded.product_type,
                    quantity = excluded.quantity, refunded_quantity = excluded.refunded_quantity,
                    price = excluded.price
            )
            SELECT customer_id::text, max(created_at) AS last_order FROM upserted
            WHERE customer_id IS NOT NULL GROUP BY customer_id
            """
            )
        ).all()
        conn.exec_driver_sql("DROP TABLE stage_orders")
        write_journeys(
            conn, ((r.external_id, journey_row(r.raw)) for r, _ in writes if r.external_id)
        )
        refresh_statistics(conn, "orders", report.inserted, also=("order_line_items",))
        report.unmatched += sum(1 for r, _ in writes if not r.customer_external_id and not r.email)
        if touched:
            bump_last_active(conn, {(t[0], t[1]) for t in touched})
            report.touched_customer_ids |= {t[0] for t in touched}


def bump_last_active(conn: sa.Connection, pairs: set[tuple[str, datetime]]) -> None:
    """last_active_at = the latest order or engagement we know of."""
    ids = [p[0] for p in pairs]
    times = [p[1] for p in pairs]
    conn.execute(
        sa.text(
            """
            UPDATE customers c SET last_active_at = t.at
            FROM unnest(CAST(:ids AS uuid[]), CAST(:times AS timestamptz[])) AS t(id, at)
            WHERE c.id = t.id AND (c.last_active_at IS NULL OR c.last_active_at < t.at)
              AND t.at <= now() + interval '1 day'
            """
        ),
        {"ids": ids, "times": times},
    )


def _item(li: Any) -> dict[str, Any]:
    return {name: getattr(li, name) for name in li.__slots__}
