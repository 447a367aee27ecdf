"""Keep every rejected record whole, with all its reasons (never silently dropped).

Reasons are masked (crm_pipeline/pii.py): analysts read them, and an error text may quote a
value. The record itself is readable only by the pipeline; its emails and phones are also kept
as keyed hashes (`identity_keys`) so a GDPR redaction finds the row by index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.db.copy import copy_rows, create_temp_table
from crm_pipeline.ingest.bad_records import escaped_text, json_problem, storable
from crm_pipeline.ingest.tombstones import identity_keys, record_identities, tombstone_key
from crm_pipeline.pii import mask_pii

ORIGINS = ("import file", "webhook", "api pull")


def quarantine(
    conn: sa.Connection,
    *,
    origin: str,
    source: str | None,
    record_kind: str,
    rows: Sequence[tuple[str | None, dict[str, Any], list[str]]],
    origin_detail: str | None = None,
    run_id: str | None = None,
    webhook_event_id: int | None = None,
) -> int:
    """Insert (external_id, record, reasons) rows; an identical open entry is not duplicated."""
    if not rows:
        return 0
    assert origin in ORIGINS, origin
    key = tombstone_key(conn)
    create_temp_table(
        conn,
        "stage_quarantine",
        "external_id text, record jsonb, reasons text[], identity_keys text[]",
    )
    copy_rows(
        conn,
        "stage_quarantine",
        ("external_id", "record", "reasons", "identity_keys"),
        (
            (
                None if ext is None else escaped_text(str(ext)),
                _jsonb(rec),
                [escaped_text(mask_pii(r)) for r in reasons],
                identity_keys(key, record_identities(rec)),
            )
            for ext, rec, reasons in rows
        ),
    )
    result = conn.execute(
        sa.text(
            """
            INSERT INTO quarantined_records
                (origin, source, record_kind, external_id, origin_detail, run_id, record, reasons,
                 identity_keys, webhook_event_id)
            SELECT :origin, :source, :kind, external_id, :detail, :run_id, record, reasons,
                   identity_keys, :webhook_event_id
            FROM stage_quarantine
            ON CONFLICT DO NOTHING
            """
        ),
        {
            "origin": origin,
            "source": source,
            "kind": record_kind,
            "detail": origin_detail,
            "run_id": run_id,
            "webhook_event_id": webhook_event_id,
        },
    )
    conn.exec_driver_sql("DROP TABLE stage_quarantine")
    return result.rowcount


def _jsonb(record: dict[str, Any]) -> bytes:
    """The record as JSON that jsonb accepts: NUL characters and text that was not UTF-8 are
    kept as visible escapes rather than failing the quarantine (and the run) itself."""
    try:
        data = orjson.dumps(record, default=str)
    except TypeError:  # a string holding surrogates (bytes that were not UTF-8)
        return orjson.dumps(storable(record), default=str)
    return orjson.dumps(storable(record), default=str) if json_problem(data) else data
