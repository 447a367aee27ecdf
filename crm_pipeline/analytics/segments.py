"""customer_segments: value, engagement, churn risk, RFM, VIP and tag-driven manual segments.

All set-based SQL over customer_metrics, in one transaction:
1. the desired assignments are computed into a temp table;
2. expired rows and system rows that no longer hold are deleted (the trigger archives them in
   customer_segment_history);
3. the desired rows are upserted: unchanged assignments keep their assigned_at, so re-running
   with the same as_of leaves the table identical;
4. customers.status follows the inactivity and VIP rules unless staff set the status
   (status_set_by = manual); blocked and pending customers are never changed. A customer is
   `inactive` when nothing was seen of them (created, order, activity) for `inactive_after_days`
   (default 180) before as_of, and `active` again when something is; of the rest, members of the
   `vip` segment are `vip`.
These writes are not recorded in the change log (crm_pipeline.changes): the refresh that makes
them mirrors them too.
Names and rules are documented in docs/metrics.md#segments.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from crm_pipeline.analytics._db import Bind, as_utc, transaction
from crm_pipeline.changes.log import not_recorded

log = logging.getLogger(__name__)

#: System assignments expire this long after the as_of that produced them.
SEGMENT_TTL = timedelta(days=7)
#: Families this module owns; other writers' system segments are left alone.
SYSTEM_PREFIXES = ("value:", "engagement:", "churn_risk:", "rfm:")
VIP_SEGMENT = "vip"
#: Tags of this form become manual custom segments named by the (lower-cased) tag.
MANUAL_TAG_PREFIX = "segment:"

# Thresholds, each in one place (docs/metrics.md#segments).
VALUE_HIGH_PERCENTILE = 0.8
VALUE_MEDIUM_PERCENTILE = 0.5
VIP_PERCENTILE = 0.95
VIP_MIN_ORDERS = 2
ENGAGED_MIN_SCORE = 40
COOLING_MIN_SCORE = 10
CHURN_MEDIUM = 0.3
CHURN_HIGH = 0.7
#: No order and no activity (nor a sign-up) for this many days before as_of: `inactive`.
INACTIVE_AFTER_DAYS = 180

_DESIRED = """
CREATE TEMP TABLE _desired_segments ON COMMIT DROP AS
WITH live AS (
    SELECT c.id, c.tags FROM customers c WHERE c.deleted_at IS NULL AND c.merged_into IS NULL
), m AS (
    SELECT m.* FROM customer_metrics m JOIN live ON live.id = m.customer_id
), buyers AS (
    SELECT customer_id, completed_orders,
           percent_rank() OVER (ORDER BY lifetime_value) AS ltv_rank,
           least(5, 1 + floor(5 * percent_rank() OVER (ORDER BY days_since_last_order DESC)))
               AS r_score,
           least(5, 1 + floor(5 * percent_rank() OVER (ORDER BY completed_orders))) AS f_score,
           least(5, 1 + floor(5 * percent_rank() OVER (ORDER BY net_revenue))) AS m_score
    FROM m WHERE completed_orders > 0
)
SELECT customer_id,
       'value:' || CASE WHEN ltv_rank >= :value_high THEN 'high'
                        WHEN ltv_rank >= :value_medium THEN 'medium' ELSE 'low' END
           AS segment_name,
       'value' AS segment_type, 1.0 AS confidence, 'system' AS assigned_by
FROM buyers
UNION ALL
SELECT customer_id, 'vip', 'value', 1.0, 'system'
FROM buyers WHERE ltv_rank >= :vip_rank AND completed_orders >= :vip_orders
UNION ALL
SELECT b.customer_id, 'rfm:' || map.segment, 'behavioral', 1.0, 'system'
FROM buyers b
JOIN rfm_segment_map map
  ON map.r_score = b.r_score
 AND map.fm_score = round(((b.f_score + b.m_score) / 2)::numeric)
UNION ALL
SELECT customer_id,
       'engagement:' || CASE WHEN coalesce(engagement_score, 0) >= :engaged THEN 'engaged'
                             WHEN coalesce(engagement_score, 0) >= :cooling THEN 'cooling'
                             ELSE 'dormant' END,
       'behavioral', 1.0, 'system'
FROM m
UNION ALL
SELECT customer_id,
       'churn_risk:' || CASE WHEN churn_probability >= :churn_high THEN 'high'
                             WHEN churn_probability >= :churn_medium THEN 'medium' ELSE 'low' END,
       'behavioral',
       CASE WHEN scoring_method IN ('mbg_nbd', 'bg_nbd') THEN 0.8 ELSE 0.5 END,
       'ml'
FROM m WHERE completed_orders > 0 AND churn_probability IS NOT NULL
UNION ALL
SELECT DISTINCT live.id, lower(btrim(tag)), 'custom', 1.0, 'manual'
FROM live, unnest(live.tags) AS tag
WHERE lower(btrim(tag)) LIKE :tag_prefix || '_%'
"""

# :ids (a uuid[] or NULL for everyone) limits every write to the customers being refreshed
_TARGETED = "(CAST(:ids AS uuid[]) IS NULL OR {col} = ANY(CAST(:ids AS uuid[])))"

_KEEP_TARGETS = "DELETE FROM _desired_segments WHERE NOT " + _TARGETED.format(col="customer_id")

_DELETE_EXPIRED = (
    "DELETE FROM customer_segments WHERE expires_at <= :as_of AND "
    + _TARGETED.format(col="customer_id")
)

_DELETE_STALE = """
DELETE FROM customer_segments s
WHERE ((s.assigned_by IN ('system', 'ml')
        AND (s.segment_name = :vip OR s.segment_name LIKE ANY (CAST(:prefixes AS text[]))))
       OR (s.assigned_by = 'manual' AND s.segment_name LIKE :tag_prefix || '%'))
  AND NOT EXISTS (SELECT 1 FROM _desired_segments d
                  WHERE d.customer_id = s.customer_id AND d.segment_name = s.segment_name)
  AND """ + _TARGETED.format(col="s.customer_id")

_UPSERT = """
INSERT INTO customer_segments AS s
    (customer_id, segment_name, segment_type, confidence, assigned_by, assigned_at, expires_at)
SELECT customer_id, segment_name, segment_type, confidence, assigned_by, :as_of,
       CASE WHEN assigned_by = 'manual' THEN NULL ELSE CAST(:as_of AS timestamptz) + :ttl END
FROM _desired_segments
ON CONFLICT (customer_id, segment_name) DO UPDATE SET
    segment_type = EXCLUDED.segment_type,
    confidence = EXCLUDED.confidence,
    assigned_by = EXCLUDED.assigned_by,
    -- renewed only past half its life: an unchanged assignment keeps its row (and the
    -- Firestore document that shows it) untouched run after run
    expires_at = CASE WHEN s.expires_at > CAST(:as_of AS timestamptz) + :ttl / 2
                            AND EXCLUDED.expires_at IS NOT NULL
                      THEN s.expires_at ELSE EXCLUDED.expires_at END
WHERE (s.segment_type, s.confidence, s.assigned_by, s.expires_at)
      IS DISTINCT FROM (EXCLUDED.segment_type, EXCLUDED.confidence, EXCLUDED.assigned_by,
                        CASE WHEN s.expires_at > CAST(:as_of AS timestamptz) + :ttl / 2
                                  AND EXCLUDED.expires_at IS NOT NULL
                             THEN s.expires_at ELSE EXCLUDED.expires_at END)
  -- a staff assignment is never turned into a system one
  AND NOT (s.assigned_by = 'manual' AND EXCLUDED.assigned_by <> 'manual')
"""

# One statement both ways: idle active/vip customers become inactive, inactive ones seen again
# become active (the VIP rule below then promotes members of the vip segment).
_INACTIVITY = """
WITH seen AS (
    -- per-customer lookups (indexed by customer_id): a touched refresh reads only its targets
    SELECT c.id,
           greatest(c.created_at, c.last_active_at,
                    (SELECT max(o.created_at) FROM orders o WHERE o.customer_id = c.id),
                    (SELECT max(a.occurred_at) FROM customer_activities a
                     WHERE a.customer_id = c.id))
               < CAST(:as_of AS timestamptz) - :inactive_after AS idle
    FROM customers c
    WHERE c.status IN ('active', 'vip', 'inactive') AND c.status_set_by = 'system'
      AND c.deleted_at IS NULL AND c.merged_into IS NULL
      AND """ + _TARGETED.format(col="c.id") + """
)
UPDATE customers c SET status = CASE WHEN seen.idle THEN 'inactive' ELSE 'active' END
FROM seen
WHERE seen.id = c.id
  AND ((c.status IN ('active', 'vip') AND seen.idle)
       OR (c.status = 'inactive' AND NOT seen.idle))
RETURNING c.status
"""

_VIP_ON = """
UPDATE customers c SET status = 'vip'
WHERE c.status = 'active' AND c.status_set_by = 'system'
  AND c.deleted_at IS NULL AND c.merged_into IS NULL
  AND EXISTS (SELECT 1 FROM _desired_segments d
              WHERE d.customer_id = c.id AND d.segment_name = :vip)
"""

_VIP_OFF = """
UPDATE customers c SET status = 'active'
WHERE c.status = 'vip' AND c.status_set_by = 'system'
  AND NOT EXISTS (SELECT 1 FROM _desired_segments d
                  WHERE d.customer_id = c.id AND d.segment_name = :vip)
  AND """ + _TARGETED.format(col="c.id")


def refresh_segments(
    bind: Bind,
    as_of: datetime | None = None,
    customer_ids: list[str] | None = None,
    inactive_after_days: int = INACTIVE_AFTER_DAYS,
) -> dict[str, Any]:
    """Recompute segment assignments and status as of `as_of`; returns counts of what changed.

    With `customer_ids`, percentiles and thresholds still come from every customer but only
    those customers' assignments and status are written (incremental runs); None: everyone.
    """
    moment = as_utc(as_of)
    params = {
        "ids": None if customer_ids is None else sorted(set(customer_ids)),
        "inactive_after": timedelta(days=inactive_after_days),
        "as_of": moment,
        "ttl": SEGMENT_TTL,
        "vip": VIP_SEGMENT,
        "prefixes": [p + "%" for p in SYSTEM_PREFIXES],
        "tag_prefix": MANUAL_TAG_PREFIX,
        "value_high": VALUE_HIGH_PERCENTILE,
        "value_medium": VALUE_MEDIUM_PERCENTILE,
        "vip_rank": VIP_PERCENTILE,
        "vip_orders": VIP_MIN_ORDERS,
        "engaged": ENGAGED_MIN_SCORE,
        "cooling": COOLING_MIN_SCORE,
        "churn_high": CHURN_HIGH,
        "churn_medium": CHURN_MEDIUM,
    }
    with transaction(bind) as conn, not_recorded(conn):
        conn.execute(sa.text("DROP TABLE IF EXISTS _desired_segments"))
        desired = conn.execute(sa.text(_DESIRED), params).rowcount
        if customer_ids is not None:
            desired -= conn.execute(sa.text(_KEEP_TARGETS), params).rowcount
        expired = conn.execute(sa.text(_DELETE_EXPIRED), params).rowcount
        removed = conn.execute(sa.text(_DELETE_STALE), params).rowcount
        upserted = conn.execute(sa.text(_UPSERT), params).rowcount
        statuses = list(conn.execute(sa.text(_INACTIVITY), params).scalars())
        vip_on = conn.execute(sa.text(_VIP_ON), params).rowcount
        vip_off = conn.execute(sa.text(_VIP_OFF), params).rowcount
        conn.execute(sa.text("DROP TABLE _desired_segments"))
    summary = {
        "as_of": moment.isoformat(),
        "assignments": desired,
        "expired_removed": expired,
        "no_longer_hold_removed": removed,
        "inserted_or_changed": upserted,
        "status_set_vip": vip_on,
        "status_unset_vip": vip_off,
        "status_set_inactive": statuses.count("inactive"),
        "status_reactivated": statuses.count("active"),
    }
    log.info("segments refreshed: %s", summary)
    return summary
