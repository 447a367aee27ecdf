"""`order_attributions` writes: journeys from order loads and lookups, Klaviyo's credits from
Placed Order events, and the orders whose journey Shopify should be asked for again."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.attribution.journey import JOURNEY_COLUMNS

# how long Shopify is asked again for a journey it had not built (it builds them within
# minutes to hours; an order older than this without one stays `unknown`)
PENDING_DAYS = 60
PENDING_PER_RUN = 2500  # ten `nodes(ids:)` lookups of 250

_TYPES = {"days_to_conversion": "int", "customer_order_index": "int"} | {
    f"{t}_visit_at": "timestamptz" for t in ("first", "last")
}
# identifiers from the fixed column tuples above, never values
_RECORD = ", ".join(f"{c} {_TYPES.get(c, 'text')}" for c in ("external_id", *JOURNEY_COLUMNS))
_COLUMNS = ", ".join(JOURNEY_COLUMNS)
_SET = ", ".join(f"{c} = excluded.{c}" for c in JOURNEY_COLUMNS)

UPSERT_JOURNEYS_SQL = f"""
INSERT INTO order_attributions AS a (order_id, {_COLUMNS}, journey_checked_at, updated_at)
SELECT o.id, {", ".join(f"x.{c}" for c in JOURNEY_COLUMNS)}, now(), now()
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x({_RECORD})
JOIN orders o ON o.source = 'shopify' AND o.external_id = x.external_id
ON CONFLICT (order_id) DO UPDATE SET {_SET}, journey_checked_at = now(),
    updated_at = CASE WHEN ({", ".join(f"a.{c}" for c in JOURNEY_COLUMNS)}) IS DISTINCT FROM ({
    ", ".join(f"excluded.{c}" for c in JOURNEY_COLUMNS)
}) THEN now() ELSE a.updated_at END
"""

# a payload without the journey field (a REST webhook) must not wipe a journey already known
UPSERT_NOT_FETCHED_SQL = """
INSERT INTO order_attributions AS a (order_id, journey_status, source_name)
SELECT o.id, 'not_fetched', x.source_name
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(external_id text, source_name text)
JOIN orders o ON o.source = 'shopify' AND o.external_id = x.external_id
ON CONFLICT (order_id) DO UPDATE SET source_name = coalesce(excluded.source_name, a.source_name)
"""


def write_journeys(conn: sa.Connection, rows: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Upsert (order external id, journey_row) pairs of Shopify orders already in `orders`."""
    fetched, not_fetched = [], []
    for external_id, row in rows:
        if row["journey_status"] == "not_fetched":
            not_fetched.append({"external_id": external_id, "source_name": row["source_name"]})
        else:
            fetched.append({"external_id": external_id, **row})
    written = 0
    if fetched:
        written += conn.execute(
            sa.text(UPSERT_JOURNEYS_SQL), {"rows": orjson.dumps(fetched).decode()}
        ).rowcount
    if not_fetched:
        written += conn.execute(
            sa.text(UPSERT_NOT_FETCHED_SQL), {"rows": orjson.dumps(not_fetched).decode()}
        ).rowcount
    return written


BACKFILL_SQL = """
INSERT INTO order_attributions (order_id, journey_status)
SELECT o.id, 'not_fetched' FROM orders o
WHERE o.source = 'shopify'
  AND NOT EXISTS (SELECT 1 FROM order_attributions a WHERE a.order_id = o.id)
"""


def backfill_missing(conn: sa.Connection) -> int:
    """Orders loaded before attribution existed get a `not_fetched` row (asked for if recent)."""
    return conn.execute(sa.text(BACKFILL_SQL)).rowcount


PENDING_SQL = """
SELECT o.external_id FROM order_attributions a JOIN orders o ON o.id = a.order_id
WHERE a.journey_status IN ('not_ready', 'not_fetched') AND o.source = 'shopify'
  AND o.created_at >= now() - make_interval(days => :days)
ORDER BY a.journey_checked_at, o.created_at DESC
LIMIT :limit
"""


def pending_journeys(
    conn: sa.Connection, days: int = PENDING_DAYS, limit: int = PENDING_PER_RUN
) -> list[str]:
    """External ids of recent orders whose journey Shopify had not built (least recently asked
    first, so a long backlog is worked through over several runs)."""
    return list(conn.execute(sa.text(PENDING_SQL), {"days": days, "limit": limit}).scalars())


# Klaviyo's Shopify integration names the order in `$event_id` (also `OrderId`); the credit is
# in `$attribution` ($flow, $message, $attributed_channel, $attributed_event_id). A message
# credited without a flow is a campaign's. event_properties is free-form in Klaviyo's OpenAPI.
KLAVIYO_SQL = """
WITH credited AS (
    SELECT DISTINCT ON (o.id) o.id AS order_id, e.external_id AS event_id,
           e.properties -> '$attribution' AS attr
    FROM customer_activities e
    JOIN orders o ON o.source = 'shopify'
     AND o.external_id = coalesce(e.properties ->> '$event_id', e.properties ->> 'OrderId')
    WHERE e.source = 'klaviyo' AND e.activity_type = 'purchase'
      AND jsonb_typeof(e.properties -> '$attribution') = 'object'
    ORDER BY o.id, e.occurred_at DESC, e.external_id
), fields AS (
    SELECT order_id, event_id, attr ->> '$flow' AS flow_id,
           CASE WHEN attr ->> '$flow' IS NULL THEN attr ->> '$message' END AS campaign_id,
           attr ->> '$message' AS message_id,
           lower(attr ->> '$attributed_channel') AS channel
    FROM credited
)
UPDATE order_attributions a SET
    klaviyo_event_id = f.event_id, klaviyo_flow_id = f.flow_id,
    klaviyo_campaign_id = f.campaign_id, klaviyo_message_id = f.message_id,
    klaviyo_channel = f.channel, updated_at = now()
FROM fields f
WHERE a.order_id = f.order_id
  AND (a.klaviyo_event_id, a.klaviyo_flow_id, a.klaviyo_campaign_id, a.klaviyo_message_id,
       a.klaviyo_channel)
      IS DISTINCT FROM (f.event_id, f.flow_id, f.campaign_id, f.message_id, f.channel)
"""


def link_klaviyo(conn: sa.Connection) -> int:
    """Copy Klaviyo's credits onto the orders they name; rows already equal are not touched."""
    return conn.execute(sa.text(KLAVIYO_SQL)).rowcount


SUMMARY_SQL = """
SELECT journey_status, count(*) AS orders,
       count(*) FILTER (WHERE klaviyo_flow_id IS NOT NULL OR klaviyo_campaign_id IS NOT NULL)
FROM order_attributions GROUP BY journey_status
"""


def summary(conn: sa.Connection) -> dict[str, int]:
    """Orders per journey status and the number Klaviyo credits, for the asset's metadata."""
    out: dict[str, int] = {}
    klaviyo = 0
    for status, orders, credited in conn.execute(sa.text(SUMMARY_SQL)):
        out[f"journeys_{status}"] = int(orders)
        klaviyo += int(credited)
    out["klaviyo_attributed_orders"] = klaviyo
    return out
