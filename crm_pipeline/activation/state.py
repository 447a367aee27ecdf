"""The sync's memory in PostgreSQL: pushed hashes, CRM lists and members, trigger events, logs.

Each write is committed with the Klaviyo call it records, so an interrupted sync resumes where
it stopped: profiles whose job finished are not sent again, members added are not added again,
and a trigger event keeps the `unique_id` it was recorded with (Klaviyo records it once).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.activation.payloads import properties_sql
from crm_pipeline.firestore.documents import LIVE_CONDITION

_PUSHED = sa.text(
    """
    INSERT INTO klaviyo_profile_state AS s (customer_id, klaviyo_profile_id, payload_hash,
                                            pushed_at, failed_hash, last_error, updated_at)
    SELECT u.customer_id, u.profile_id, u.hash, now(), NULL, NULL, now()
    FROM unnest(CAST(:customer_id AS uuid[]), CAST(:profile_id AS text[]),
                CAST(:hash AS text[])) AS u(customer_id, profile_id, hash)
    ON CONFLICT (customer_id) DO UPDATE SET
        klaviyo_profile_id = coalesce(excluded.klaviyo_profile_id, s.klaviyo_profile_id),
        payload_hash = excluded.payload_hash, pushed_at = excluded.pushed_at,
        failed_hash = NULL, last_error = NULL, updated_at = now()
    """
)
_FAILED = sa.text(
    """
    INSERT INTO klaviyo_profile_state AS s (customer_id, failed_hash, last_error, updated_at)
    SELECT u.customer_id, u.hash, u.error, now()
    FROM unnest(CAST(:customer_id AS uuid[]), CAST(:hash AS text[]), CAST(:error AS text[]))
         AS u(customer_id, hash, error)
    ON CONFLICT (customer_id) DO UPDATE SET
        failed_hash = excluded.failed_hash, last_error = excluded.last_error, updated_at = now()
    """
)
_LOG = sa.text(
    """
    INSERT INTO customer_sync_logs (customer_id, run_id, operation, postgres_status,
                                    firestore_status, target, klaviyo_status, error_message,
                                    data_snapshot)
    SELECT u.customer_id, :run_id, u.operation, 'success', 'skipped', 'klaviyo', u.status,
           u.error, CAST(u.snapshot AS jsonb)
    FROM unnest(CAST(:customer_id AS uuid[]), CAST(:operation AS text[]),
                CAST(:status AS text[]), CAST(:error AS text[]), CAST(:snapshot AS text[]))
         AS u(customer_id, operation, status, error, snapshot)
    """
)


def mark_pushed(conn: sa.Connection, pushed: list[tuple[str, str | None, str]]) -> None:
    """(customer id, Klaviyo profile id, payload hash) accepted by Klaviyo."""
    if pushed:
        ids, profiles, hashes = (list(col) for col in zip(*pushed, strict=True))
        conn.execute(_PUSHED, {"customer_id": ids, "profile_id": profiles, "hash": hashes})


def mark_failed(conn: sa.Connection, failed: list[tuple[str, str, str]]) -> None:
    """(customer id, payload hash, error) refused by Klaviyo for this payload."""
    if failed:
        ids, hashes, errors = (list(col) for col in zip(*failed, strict=True))
        conn.execute(_FAILED, {"customer_id": ids, "hash": hashes, "error": errors})


def log_rows(
    conn: sa.Connection,
    run_id: str,
    rows: Iterable[tuple[str | None, str, str, str | None, dict[str, Any] | None]],
) -> None:
    """customer_sync_logs rows with target klaviyo: (customer, operation, status, error, data)."""
    rows = list(rows)
    if not rows:
        return
    ids, ops, statuses, errors, snapshots = (list(col) for col in zip(*rows, strict=True))
    conn.execute(
        _LOG,
        {
            "run_id": run_id,
            "customer_id": ids,
            "operation": ops,
            "status": statuses,
            "error": errors,
            "snapshot": [None if s is None else orjson.dumps(s).decode() for s in snapshots],
        },
    )


# ------------------------------------------------------------------ lists
def crm_lists(conn: sa.Connection) -> dict[str, str]:
    """segment name -> Klaviyo list id, for lists the CRM created."""
    rows = conn.execute(sa.text("SELECT segment_name, list_id FROM klaviyo_lists")).all()
    return {r.segment_name: r.list_id for r in rows}


def record_list(conn: sa.Connection, segment: str, list_id: str, name: str) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO klaviyo_lists (segment_name, list_id, list_name) "
            "VALUES (:segment, :list_id, :name) ON CONFLICT (segment_name) DO NOTHING"
        ),
        {"segment": segment, "list_id": list_id, "name": name},
    )


def list_members(conn: sa.Connection, segment: str) -> dict[str, str | None]:
    """Klaviyo profile id -> customer id of the members the CRM added to a segment's list."""
    rows = conn.execute(
        sa.text(
            "SELECT klaviyo_profile_id, customer_id::text FROM klaviyo_list_members "
            "WHERE segment_name = :segment"
        ),
        {"segment": segment},
    ).all()
    return {r[0]: r[1] for r in rows}


def members_added(conn: sa.Connection, segment: str, added: list[tuple[str, str]]) -> None:
    """(profile id, customer id) now on the segment's list."""
    if added:
        conn.execute(
            sa.text(
                "INSERT INTO klaviyo_list_members (segment_name, klaviyo_profile_id, customer_id) "
                "SELECT :segment, u.p, u.c FROM unnest(CAST(:p AS text[]), CAST(:c AS uuid[])) "
                "AS u(p, c) ON CONFLICT DO NOTHING"
            ),
            {"segment": segment, "p": [a[0] for a in added], "c": [a[1] for a in added]},
        )


def members_removed(conn: sa.Connection, segment: str, removed: list[str]) -> None:
    if removed:
        conn.execute(
            sa.text(
                "DELETE FROM klaviyo_list_members WHERE segment_name = :segment "
                "AND klaviyo_profile_id = ANY(CAST(:p AS text[]))"
            ),
            {"segment": segment, "p": removed},
        )


# ------------------------------------------------------------------ trigger events
# Entries into a configured segment and customers new to the CRM, not yet recorded. An entry is
# one assignment: re-entering later (a new assigned_at) is a new entry with a new unique_id.
_NEW_TRIGGERS = f"""
WITH live AS (
    SELECT c.id FROM customers c
    WHERE {LIVE_CONDITION} AND (c.email IS NOT NULL OR c.phone_normalized IS NOT NULL)
), found AS (
    SELECT 'crm-entered:' || s.segment_name || ':' || s.customer_id || ':'
               || floor(extract(epoch FROM s.assigned_at))::bigint AS unique_id,
           s.customer_id, 'CRM Entered Segment' AS metric_name, s.segment_name
    FROM customer_segments s JOIN live ON live.id = s.customer_id
    WHERE s.segment_name = ANY(CAST(:segments AS text[]))
      AND (s.expires_at IS NULL OR s.expires_at > now())
    UNION ALL
    SELECT 'crm-new:' || live.id, live.id, 'CRM New Customer', NULL FROM live
)
SELECT found.unique_id, found.customer_id::text, found.metric_name, found.segment_name
FROM found
WHERE NOT EXISTS (SELECT 1 FROM klaviyo_trigger_events e WHERE e.unique_id = found.unique_id)
"""


def new_triggers(conn: sa.Connection, segments: list[str]) -> list[Any]:
    return list(conn.execute(sa.text(_NEW_TRIGGERS), {"segments": segments}).all())


def has_trigger_history(conn: sa.Connection) -> bool:
    """Whether any trigger was ever recorded: the first sync records a baseline instead of
    firing a welcome and an entry event for every existing customer."""
    return bool(
        conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM klaviyo_trigger_events)")).scalar_one()
    )


def record_triggers(conn: sa.Connection, triggers: list[Any], status: str) -> None:
    if triggers:
        conn.execute(
            sa.text(
                "INSERT INTO klaviyo_trigger_events (unique_id, customer_id, metric_name, "
                "segment_name, status) SELECT u.id, u.c, u.m, u.s, :status FROM unnest("
                "CAST(:id AS text[]), CAST(:c AS uuid[]), CAST(:m AS text[]), "
                "CAST(:s AS text[])) AS u(id, c, m, s) ON CONFLICT (unique_id) DO NOTHING"
            ),
            {
                "status": status,
                "id": [t.unique_id for t in triggers],
                "c": [t.customer_id for t in triggers],
                "m": [t.metric_name for t in triggers],
                "s": [t.segment_name for t in triggers],
            },
        )


PENDING_TRIGGERS = sa.text(
    f"""
    SELECT e.unique_id, e.customer_id::text, e.metric_name, e.segment_name,
           c.email, c.phone_normalized, st.klaviyo_profile_id,
           {properties_sql("c", "m", "g.segments")} AS properties
    FROM klaviyo_trigger_events e
    JOIN customers c ON c.id = e.customer_id
    LEFT JOIN klaviyo_profile_state st ON st.customer_id = e.customer_id
    LEFT JOIN customer_metrics m ON m.customer_id = e.customer_id
    CROSS JOIN LATERAL (
        SELECT coalesce(array_agg(s.segment_name ORDER BY s.segment_name), '{{}}') AS segments
        FROM customer_segments s WHERE s.customer_id = c.id
    ) g
    WHERE e.status IN ('pending', 'failed')
    ORDER BY e.created_at, e.unique_id
    """
)


def pending_count(conn: sa.Connection) -> int:
    return int(
        conn.execute(
            sa.text(
                "SELECT count(*) FROM klaviyo_trigger_events WHERE status IN ('pending', 'failed')"
            )
        ).scalar_one()
    )


def trigger_done(conn: sa.Connection, unique_id: str, error: str | None) -> None:
    conn.execute(
        sa.text(
            "UPDATE klaviyo_trigger_events SET status = :status, "
            "last_error = CAST(:error AS text), "
            "sent_at = CASE WHEN :error IS NULL THEN now() END WHERE unique_id = :id"
        ),
        {"status": "failed" if error else "sent", "error": error, "id": unique_id},
    )
