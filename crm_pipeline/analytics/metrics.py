"""customer_metrics: order, product, time and engagement metrics per customer, as of a moment.

Every column is defined once, in `_METRICS_SELECT` below; docs/metrics.md is the table of
definitions. Only orders created and activities that occurred at or before `as_of` count, so a
backfill with an earlier `as_of` reproduces history (refund amounts and financial statuses are
the orders' current state: the schema keeps no refund timeline).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from crm_pipeline.analytics._db import Bind, as_utc, transaction
from crm_pipeline.db.copy import copy_rows

log = logging.getLogger(__name__)

#: A completed order as of :as_of: placed, not cancelled by then, and paid. Shared with scores.
COMPLETED_ORDER_SQL = (
    "(o.cancelled_at IS NULL OR o.cancelled_at > :as_of) "
    "AND o.financial_status IN ('paid', 'partially_refunded', 'refunded')"
)
#: Engagement: each event counts weight * 0.5 ** (age_days / half-life) ...
ENGAGEMENT_HALF_LIFE_DAYS = 30.0
ENGAGEMENT_WEIGHTS: dict[str, float] = {
    "email_open": 1.0,
    "email_click": 3.0,
    "sms_click": 3.0,
    "page_view": 0.5,
    "active_on_site": 1.0,
    "product_view": 2.0,
    "add_to_cart": 4.0,
    "checkout_started": 5.0,
}
#: ... completed orders (from `orders`, not 'purchase' activities, so nothing counts twice) ...
ENGAGEMENT_ORDER_WEIGHT = 10.0
#: ... and the sum is squashed: score = 100 * (1 - exp(-sum / scale)).
ENGAGEMENT_SCALE = 10.0
#: How the ingestion marks a Klaviyo 'Received Email' event (activity_type 'other').
RECEIVED_EMAIL_SQL = "(a.activity_type = 'other' AND a.properties ->> 'metric' = 'Received Email')"
#: Rows whose inputs changed this close before their computation are recomputed anyway, so a
#: writer whose transaction started before ours but committed after is never missed.
CHANGE_MARGIN = timedelta(minutes=5)
#: Incremental runs also recompute rows whose as_of is older than this (days_since_last_order
#: and engagement decay with time even when no input changes).
DEFAULT_STALE_AFTER = timedelta(hours=24)

METRIC_COLUMNS = (
    "total_orders", "completed_orders", "cancelled_orders", "returned_orders", "total_spent",
    "total_refunded", "net_revenue", "average_order_value", "lifetime_value", "items_purchased",
    "favorite_category", "favorite_brand", "first_order_date", "last_order_date",
    "days_since_last_order", "email_opens", "email_clicks", "email_received", "open_rate",
    "click_rate", "engagement_score",
)  # fmt: skip

# Decay is measured to the start of as_of's UTC day (never negative): a score then moves once a
# day without new inputs, like days_since_last_order, instead of on every run; downstream
# (the Firestore mirror) rewrites a document only when it really changed.
_DECAY = (
    "exp(ln(0.5) * greatest(0, extract(epoch FROM ("
    "date_trunc('day', CAST(:as_of AS timestamptz), 'UTC') - {ts})))::float8"
    " / 86400.0 / :half_life)"
)

_METRICS_SELECT = f"""
WITH t AS (SELECT customer_id FROM _metric_targets),
ord AS (
    SELECT o.customer_id, o.id, o.created_at, o.total_price, o.total_refunded,
           (o.cancelled_at IS NOT NULL AND o.cancelled_at <= :as_of) AS is_cancelled,
           coalesce({COMPLETED_ORDER_SQL}, false) AS is_completed,
           EXISTS (SELECT 1 FROM order_line_items r
                   WHERE r.order_id = o.id AND r.refunded_quantity > 0) AS has_refunded_items
    FROM orders o JOIN t ON t.customer_id = o.customer_id
    WHERE o.created_at <= :as_of
),
order_totals AS (
    SELECT customer_id,
           count(*) AS total_orders,
           count(*) FILTER (WHERE is_completed) AS completed_orders,
           count(*) FILTER (WHERE is_cancelled) AS cancelled_orders,
           count(*) FILTER (WHERE is_completed AND (total_refunded > 0 OR has_refunded_items))
               AS returned_orders,
           coalesce(sum(total_price) FILTER (WHERE is_completed), 0) AS total_spent,
           coalesce(sum(total_refunded) FILTER (WHERE is_completed), 0) AS total_refunded,
           min(created_at) FILTER (WHERE is_completed) AS first_order_date,
           max(created_at) FILTER (WHERE is_completed) AS last_order_date,
           coalesce(sum({_DECAY.format(ts="created_at")}) FILTER (WHERE is_completed), 0)
               AS order_decay
    FROM ord GROUP BY customer_id
),
items AS (
    SELECT ord.customer_id, li.vendor, li.product_type,
           greatest(li.quantity - li.refunded_quantity, 0) AS net_quantity
    FROM ord JOIN order_line_items li ON li.order_id = ord.id
    WHERE ord.is_completed
),
item_totals AS (
    SELECT customer_id, sum(net_quantity) AS items_purchased FROM items GROUP BY customer_id
),
fav_category AS (
    SELECT DISTINCT ON (customer_id) customer_id, product_type AS favorite_category
    FROM (SELECT customer_id, product_type, sum(net_quantity) AS quantity FROM items
          WHERE btrim(coalesce(product_type, '')) <> '' GROUP BY 1, 2) x
    WHERE quantity > 0
    ORDER BY customer_id, quantity DESC, product_type COLLATE "C"
),
fav_brand AS (
    SELECT DISTINCT ON (customer_id) customer_id, vendor AS favorite_brand
    FROM (SELECT customer_id, vendor, sum(net_quantity) AS quantity FROM items
          WHERE btrim(coalesce(vendor, '')) <> '' GROUP BY 1, 2) x
    WHERE quantity > 0
    ORDER BY customer_id, quantity DESC, vendor COLLATE "C"
),
acts AS (
    SELECT a.customer_id,
           count(*) FILTER (WHERE a.activity_type = 'email_open') AS email_opens,
           count(*) FILTER (WHERE a.activity_type = 'email_click') AS email_clicks,
           count(*) FILTER (WHERE {RECEIVED_EMAIL_SQL}) AS email_received,
           coalesce(sum(w.weight * {_DECAY.format(ts="a.occurred_at")}), 0) AS activity_decay
    FROM customer_activities a
    JOIN t ON t.customer_id = a.customer_id
    LEFT JOIN (SELECT key AS activity_type, value::float8 AS weight
               FROM jsonb_each_text(CAST(:weights AS jsonb))) w
           ON w.activity_type = a.activity_type
    WHERE a.occurred_at <= :as_of
    GROUP BY a.customer_id
),
base AS (
    SELECT t.customer_id,
           coalesce(ot.total_orders, 0) AS total_orders,
           coalesce(ot.completed_orders, 0) AS completed_orders,
           coalesce(ot.cancelled_orders, 0) AS cancelled_orders,
           coalesce(ot.returned_orders, 0) AS returned_orders,
           coalesce(ot.total_spent, 0) AS total_spent,
           coalesce(ot.total_refunded, 0) AS total_refunded,
           coalesce(it.items_purchased, 0) AS items_purchased,
           fc.favorite_category, fb.favorite_brand,
           ot.first_order_date, ot.last_order_date,
           coalesce(ac.email_opens, 0) AS email_opens,
           coalesce(ac.email_clicks, 0) AS email_clicks,
           coalesce(ac.email_received, 0) AS email_received,
           coalesce(ot.order_decay, 0) * :order_weight + coalesce(ac.activity_decay, 0)
               AS engagement_raw
    FROM t
    LEFT JOIN order_totals ot ON ot.customer_id = t.customer_id
    LEFT JOIN item_totals it ON it.customer_id = t.customer_id
    LEFT JOIN fav_category fc ON fc.customer_id = t.customer_id
    LEFT JOIN fav_brand fb ON fb.customer_id = t.customer_id
    LEFT JOIN acts ac ON ac.customer_id = t.customer_id
)
SELECT customer_id, total_orders, completed_orders, cancelled_orders, returned_orders,
       total_spent, total_refunded,
       total_spent - total_refunded AS net_revenue,
       coalesce(round(total_spent / nullif(completed_orders, 0), 2), 0) AS average_order_value,
       total_spent - total_refunded AS lifetime_value,
       items_purchased, favorite_category, favorite_brand, first_order_date, last_order_date,
       -- calendar days (UTC): the number moves at midnight, not at the hour of the last order
       ((CAST(:as_of AS timestamptz) AT TIME ZONE 'UTC')::date
        - (last_order_date AT TIME ZONE 'UTC')::date) AS days_since_last_order,
       email_opens, email_clicks, email_received,
       round(email_opens::numeric / nullif(greatest(email_received, email_opens), 0), 4)
           AS open_rate,
       round(email_clicks::numeric
             / nullif(greatest(email_received, email_opens, email_clicks), 0), 4) AS click_rate,
       round((100 * (1 - exp(-engagement_raw / :scale)))::numeric, 2) AS engagement_score
FROM base
"""

_UPSERT = f"""
INSERT INTO customer_metrics (customer_id, {", ".join(METRIC_COLUMNS)}, as_of, computed_at)
SELECT customer_id, {", ".join(METRIC_COLUMNS)}, CAST(:as_of AS timestamptz), now()
FROM ({_METRICS_SELECT}) computed
ON CONFLICT (customer_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in METRIC_COLUMNS)},
    as_of = EXCLUDED.as_of,
    computed_at = EXCLUDED.computed_at
"""

_CHANGED = """
WITH since AS (SELECT min(computed_at) - CAST(:margin AS interval) AS t FROM customer_metrics),
live AS (SELECT id FROM customers WHERE deleted_at IS NULL AND merged_into IS NULL)
SELECT live.id FROM live LEFT JOIN customer_metrics m ON m.customer_id = live.id
WHERE m.customer_id IS NULL OR m.as_of < CAST(:as_of AS timestamptz) - CAST(:stale AS interval)
UNION
SELECT c.id FROM customers c JOIN customer_metrics m ON m.customer_id = c.id
WHERE c.deleted_at IS NULL AND c.merged_into IS NULL
  AND c.updated_at > (SELECT t FROM since) AND c.updated_at > m.computed_at - :margin
UNION
SELECT o.customer_id FROM orders o JOIN customer_metrics m ON m.customer_id = o.customer_id
JOIN live ON live.id = o.customer_id
WHERE o.updated_at > (SELECT t FROM since) AND o.updated_at > m.computed_at - :margin
UNION
SELECT a.customer_id FROM customer_activities a
JOIN customer_metrics m ON m.customer_id = a.customer_id
JOIN live ON live.id = a.customer_id
WHERE a.created_at > (SELECT t FROM since) AND a.created_at > m.computed_at - :margin
"""


@dataclass(frozen=True)
class MetricsRun:
    """What a metrics computation did (for asset metadata and logs)."""

    as_of: datetime
    customers: int
    full: bool


def changed_customer_ids(
    bind: Bind, as_of: datetime | None = None, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> list[str]:
    """Live customers whose metrics are missing, stale, or whose inputs changed since computed."""
    params = {"as_of": as_utc(as_of), "margin": CHANGE_MARGIN, "stale": stale_after}
    with transaction(bind) as conn:
        return [str(r[0]) for r in conn.execute(sa.text(_CHANGED), params)]


def compute_metrics(
    bind: Bind, as_of: datetime | None = None, customer_ids: list[str] | None = None
) -> MetricsRun:
    """Recompute and upsert customer_metrics for `customer_ids` (None: every live customer).

    Predictive columns are left alone: `scores.write_scores` owns them.
    """
    moment = as_utc(as_of)
    with transaction(bind) as conn:
        conn.execute(
            sa.text(
                "CREATE TEMP TABLE IF NOT EXISTS _metric_targets (customer_id uuid PRIMARY KEY)"
            )
        )
        conn.execute(sa.text("TRUNCATE _metric_targets"))
        if customer_ids is None:
            conn.execute(
                sa.text(
                    "INSERT INTO _metric_targets SELECT id FROM customers "
                    "WHERE deleted_at IS NULL AND merged_into IS NULL"
                )
            )
        else:
            copy_rows(conn, "_metric_targets", ["customer_id"], [(i,) for i in set(customer_ids)])
        conn.execute(sa.text("ANALYZE _metric_targets"))
        result = conn.execute(
            sa.text(_UPSERT),
            {
                "as_of": moment,
                "half_life": ENGAGEMENT_HALF_LIFE_DAYS,
                "weights": json.dumps(ENGAGEMENT_WEIGHTS),
                "order_weight": ENGAGEMENT_ORDER_WEIGHT,
                "scale": ENGAGEMENT_SCALE,
            },
        )
        count = result.rowcount
    log.info("computed metrics for %d customers as of %s", count, moment.isoformat())
    return MetricsRun(as_of=moment, customers=count, full=customer_ids is None)
