"""The dashboard's Firestore documents, built in SQL: stats cards, segments, the activity feed.

`stats/current` is the `customer_stats` view; the same numbers are kept once per day under
`stats/history/days/{YYYY-MM-DD}` for the growth chart (Firestore paths alternate collection and
document, so "stats/history/{date}" needs the `days` level). `segments/{name}` are the segment
counts. `recent_activity/{activity id}` holds the latest RECENT_ACTIVITY_LIMIT activities across
live customers for the dashboard timeline. Shapes: docs/firestore-mirror.md#dashboard-documents.
"""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.firestore.documents import (
    LIVE_CONDITION,
    SEGMENTS,
    STATS,
    STATS_DOCUMENT,
    segment_document_id,
)
from crm_pipeline.normalize import parse_timestamp

STATS_HISTORY = "history"
STATS_HISTORY_DAYS = "days"
RECENT_ACTIVITY = "recent_activity"
RECENT_ACTIVITY_LIMIT = 100

_STATS_SQL = sa.text(
    """
    SELECT json_build_object(
        'total_customers', total_customers,
        'active_customers', active_customers,
        'vip_customers', vip_customers,
        'inactive_customers', inactive_customers,
        'average_ltv', mirror_money(average_ltv),
        'churn_rate', mirror_float(churn_rate),
        'new_this_month', new_this_month,
        'new_last_month', new_last_month,
        'high_risk_customers', high_risk_customers,
        'growth_rate', mirror_float(growth_rate))::text
    FROM customer_stats
    """
)
_SEGMENTS_SQL = sa.text(
    f"""
    SELECT json_build_object(
        'name', s.segment_name,
        'segment_type', mode() WITHIN GROUP (ORDER BY s.segment_type),
        'customer_count', count(*),
        'share', round(count(*)::numeric / nullif(max(t.total), 0), 4)::float8,
        'average_ltv', mirror_money(avg(m.lifetime_value)),
        'total_ltv', mirror_money(coalesce(sum(m.lifetime_value), 0)),
        'manual_assignments', count(*) FILTER (WHERE s.assigned_by = 'manual'))::text
    FROM customer_segments s
    JOIN customers c ON c.id = s.customer_id AND {LIVE_CONDITION}
    LEFT JOIN customer_metrics m ON m.customer_id = c.id
    CROSS JOIN (SELECT count(*) AS total FROM customers c WHERE {LIVE_CONDITION}) t
    GROUP BY s.segment_name
    ORDER BY s.segment_name
    """
)
# Walks customer_activities_occurred_idx newest first and stops after the live customers' first
# `limit` rows. No properties or UTM fields: the timeline shows who did what when.
_RECENT_ACTIVITY_SQL = sa.text(
    f"""
    SELECT x.id::text, json_build_object(
        'activity_id', x.id,
        'customer_id', c.id,
        'customer_name', coalesce(c.full_name, c.email, c.phone_normalized, c.phone, 'Customer'),
        'activity_type', x.activity_type,
        'source', x.source,
        'occurred_at', mirror_ts(x.occurred_at))::text
    FROM customer_activities x
    JOIN customers c ON c.id = x.customer_id AND {LIVE_CONDITION}
    ORDER BY x.occurred_at DESC, x.id DESC
    LIMIT :limit
    """
)


def stats_history_path(day: date) -> str:
    """The growth chart's document for a day: one per day, rewritten during the day."""
    return f"{STATS}/{STATS_HISTORY}/{STATS_HISTORY_DAYS}/{day.isoformat()}"


def fetch_dashboard_documents(conn: sa.Connection) -> dict[str, dict[str, Any]]:
    """`stats/current` and `segments/{name}` documents keyed by their path."""
    stats = orjson.loads(conn.execute(_STATS_SQL).scalar_one())
    for key in ("churn_rate", "growth_rate"):
        if isinstance(stats.get(key), int):
            stats[key] = float(stats[key])
    docs: dict[str, dict[str, Any]] = {f"{STATS}/{STATS_DOCUMENT}": stats}
    for (text,) in conn.execute(_SEGMENTS_SQL):
        segment = orjson.loads(text)
        if isinstance(segment.get("share"), int):
            segment["share"] = float(segment["share"])
        docs[f"{SEGMENTS}/{segment_document_id(segment['name'])}"] = segment
    return docs


def fetch_recent_activity(
    conn: sa.Connection, limit: int = RECENT_ACTIVITY_LIMIT
) -> dict[str, dict[str, Any]]:
    """The feed's documents by id, each with a `fingerprint` of its content (skip unchanged)."""
    feed: dict[str, dict[str, Any]] = {}
    for activity_id, text in conn.execute(_RECENT_ACTIVITY_SQL, {"limit": limit}):
        item = orjson.loads(text)
        item["fingerprint"] = hashlib.sha256(text.encode()).hexdigest()[:32]
        item["occurred_at"] = parse_timestamp(item["occurred_at"])
        feed[activity_id] = item
    return feed
