"""Load engagement events into customer_activities (idempotent on source + external id)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from crm_pipeline.db.copy import copy_rows, create_temp_table
from crm_pipeline.ingest.base import CHUNK_SIZE, Loader, clamp_ts, refresh_statistics
from crm_pipeline.ingest.orders import bump_last_active
from crm_pipeline.mapping.records import ActivityRecord

if TYPE_CHECKING:  # pandas and pandera load with the first validation (fast starts)
    from datetime import datetime

    import pandas as pd
    import pandera.pandas as pa


def _schema(now: datetime | None = None) -> pa.DataFrameSchema:
    from crm_pipeline.schemas.records import activity_schema

    return activity_schema(now)


def _frame(records: list[ActivityRecord]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "external_id": pd.Series([r.external_id for r in records], dtype=object),
            "profile_external_id": pd.Series(
                [r.profile_external_id for r in records], dtype=object
            ),
            "activity_type": pd.Series([r.activity_type for r in records], dtype=object),
            "occurred_at": pd.to_datetime([clamp_ts(r.occurred_at) for r in records], utc=True),
        }
    )


class ActivityLoader(Loader):
    """Loads ActivityRecords; events whose person is unknown are quarantined, not dropped."""

    record_kind = "activity"
    report_kind = "activities"
    index_tables = ("customer_activities",)
    schema_factory = staticmethod(_schema)
    default_chunk_size = CHUNK_SIZE * 2

    def _load_chunk(self, conn: sa.Connection, chunk: list[ActivityRecord]) -> None:
        report = self.report
        source = chunk[0].source
        failures = self._validate(chunk, _frame(chunk))
        valid = [r for i, r in enumerate(chunk) if i not in failures]
        owners = {
            row.external_id: row.customer_id
            for row in conn.execute(
                sa.text(
                    "SELECT external_id, customer_id::text AS customer_id "
                    "FROM customer_sources WHERE source = :source AND external_id = ANY(:ids)"
                ),
                {"source": source, "ids": sorted({r.profile_external_id for r in valid})},
            )
        }
        rejected = [
            (chunk[i].external_id, chunk[i].raw, reasons) for i, reasons in failures.items()
        ]
        rows: list[tuple[Any, ...]] = []
        for r in valid:
            customer_id = owners.get(r.profile_external_id)
            if customer_id is None:
                rejected.append((r.external_id, r.raw, ["profile_external_id: unknown_profile"]))
                continue
            rows.append((customer_id, r))
        self._quarantine(conn, source, rejected)
        if not rows:
            return
        create_temp_table(
            conn,
            "stage_activities",
            "customer_id uuid, activity_type text, occurred_at timestamptz, session_id text, "
            "utm_source text, utm_medium text, utm_campaign text, ip_address text, "
            "user_agent text, properties jsonb, source text, external_id text",
        )

        def gen() -> Iterator[tuple[Any, ...]]:
            for customer_id, r in rows:
                yield (
                    customer_id,
                    r.activity_type,
                    r.occurred_at,
                    r.session_id,
                    r.utm_source,
                    r.utm_medium,
                    r.utm_campaign,
                    r.ip_address,
                    r.user_agent,
                    orjson.dumps(r.properties, default=str),
                    r.source,
                    r.external_id,
                )

        copy_rows(
            conn,
            "stage_activities",
            (
                "customer_id",
                "activity_type",
                "occurred_at",
                "session_id",
                "utm_source",
                "utm_medium",
                "utm_campaign",
                "ip_address",
                "user_agent",
                "properties",
                "source",
                "external_id",
            ),
            gen(),
        )
        inserted = conn.execute(
            sa.text(
                """
            WITH ins AS (
                INSERT INTO customer_activities
                    (customer_id, activity_type, occurred_at, session_id, utm_source, utm_medium,
                     utm_campaign, ip_address, user_agent, properties, source, external_id)
                SELECT DISTINCT ON (source, external_id) customer_id, activity_type, occurred_at,
                       session_id, utm_source, utm_medium, utm_campaign, ip_address, user_agent,
                       properties, source, external_id
                FROM stage_activities ORDER BY source, external_id
                ON CONFLICT (source, external_id) DO NOTHING
                RETURNING customer_id, occurred_at
            )
            SELECT customer_id::text, max(occurred_at), count(*) FROM ins GROUP BY customer_id
            """
            )
        ).all()
        conn.exec_driver_sql("DROP TABLE stage_activities")
        n_new = sum(t[2] for t in inserted)
        report.inserted += n_new
        report.unchanged += len(rows) - n_new
        refresh_statistics(conn, "customer_activities", report.inserted)
        if inserted:
            bump_last_active(conn, {(t[0], t[1]) for t in inserted})
            report.touched_customer_ids |= {t[0] for t in inserted}
