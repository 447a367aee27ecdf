"""What the CRM pushes onto each customer's Klaviyo profile, and its hash.

A profile resource carries one identifier (email, else phone, else the Klaviyo id we hold:
Klaviyo matches on it) and the CRM properties marketers segment and personalise on. Nothing
about consent is ever sent: subscribing is the customer's act, not the pipeline's. The hash of
the resource decides whether the customer is sent again (like the Firestore mirror's hash);
both are computed in PostgreSQL, so a run where nothing changed parses no payload.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
import sqlalchemy as sa

from crm_pipeline.changes.buckets import Bucket, in_bucket_sql
from crm_pipeline.firestore.documents import LIVE_CONDITION

# customers read per round trip; the sync holds only the changed ones
READ_BATCH = 5_000

_SUBSCRIPTIONS = "ks.source_data -> 'attributes' -> 'subscriptions'"


def properties_sql(customer: str, metrics: str, segments: str) -> str:
    """The CRM properties of a customer as one jsonb object (names in docs/activation.md), for
    the customer/metrics table aliases and a text[] of segment names; properties without a
    value are left out rather than sent as null."""
    family = "(SELECT substr(x, {n}) FROM unnest({segments}) AS x WHERE x LIKE '{p}%' LIMIT 1)"
    return f"""jsonb_strip_nulls(jsonb_build_object(
        'crm_customer_id', {customer}.id::text,
        'crm_lifetime_value', round({metrics}.lifetime_value, 2),
        'crm_predicted_ltv', round({metrics}.predicted_ltv, 2),
        'crm_churn_probability', round({metrics}.churn_probability::numeric, 3),
        'crm_predicted_next_order_date', to_char({metrics}.predicted_next_order_date,
                                                 'YYYY-MM-DD'),
        'crm_engagement_score', round({metrics}.engagement_score, 1),
        'crm_rfm_segment', {family.format(n=5, p="rfm:", segments=segments)},
        'crm_value_tier', {family.format(n=7, p="value:", segments=segments)},
        'crm_vip', 'vip' = ANY({segments}),
        'crm_segments', to_jsonb({segments})))"""


# The profile resource is built and hashed here, so an unchanged customer costs no Python work:
# one identifier (email, else phone, else the Klaviyo id), then the CRM properties.
# `{bucket_filter}` (braces doubled in the f-string) is where a bucket's condition goes.
_CUSTOMERS_SQL = f"""
SELECT c.id::text AS customer_id, c.email, c.phone_normalized, c.created_at, g.segments,
       k.external_id AS klaviyo_id, coalesce(k.suppressed, false) AS suppressed,
       st.payload_hash AS pushed_hash, st.failed_hash, st.klaviyo_profile_id,
       rt.resource, md5(rt.resource) AS payload_hash
FROM customers c
LEFT JOIN customer_metrics m ON m.customer_id = c.id
LEFT JOIN klaviyo_profile_state st ON st.customer_id = c.id
CROSS JOIN LATERAL (
    SELECT coalesce(array_agg(s.segment_name ORDER BY s.segment_name), '{{}}') AS segments
    FROM customer_segments s
    WHERE s.customer_id = c.id AND (s.expires_at IS NULL OR s.expires_at > now())
) g
LEFT JOIN LATERAL (
    SELECT ks.external_id,
           jsonb_array_length(coalesce({_SUBSCRIPTIONS} -> 'email' -> 'marketing'
                                       -> 'suppression', '[]'::jsonb)) > 0 AS suppressed
    FROM customer_sources ks
    WHERE ks.customer_id = c.id AND ks.source = 'klaviyo' AND ks.deleted_at IS NULL
    ORDER BY ks.source_updated_at DESC NULLS LAST LIMIT 1
) k ON true
CROSS JOIN LATERAL (
    SELECT jsonb_build_object(
        'type', 'profile',
        'attributes', jsonb_strip_nulls(jsonb_build_object(
            'email', c.email,
            'phone_number', CASE WHEN c.email IS NULL THEN c.phone_normalized END))
            || jsonb_build_object('properties', {properties_sql("c", "m", "g.segments")}))
        || CASE WHEN c.email IS NULL AND c.phone_normalized IS NULL
                THEN jsonb_build_object('id', k.external_id) ELSE '{{}}'::jsonb END AS resource
) r
CROSS JOIN LATERAL (SELECT r.resource::text AS resource) rt
WHERE {LIVE_CONDITION} AND c.id > CAST(:after AS uuid)
  AND (c.email IS NOT NULL OR c.phone_normalized IS NOT NULL OR k.external_id IS NOT NULL)
  {{bucket_filter}}
ORDER BY c.id
LIMIT :limit
"""
CUSTOMERS_SQL = sa.text(_CUSTOMERS_SQL.replace("{bucket_filter}", ""))
# one customer-hash bucket of them (recompute_bucketed's klaviyo_bucket_i)
BUCKET_CUSTOMERS_SQL = sa.text(
    _CUSTOMERS_SQL.replace("{bucket_filter}", "AND " + in_bucket_sql("c.id"))
)


@dataclass(frozen=True)
class ProfileRow:
    """One customer as the sync sees it: the resource to push and what was pushed before."""

    customer_id: str
    resource_json: str
    email: str | None
    phone: str | None
    payload_hash: str
    pushed_hash: str | None
    failed_hash: str | None
    klaviyo_profile_id: str | None
    segments: tuple[str, ...]
    suppressed: bool
    created_at: datetime | None

    @property
    def changed(self) -> bool:
        # a payload Klaviyo refused is not sent again until it changes
        return self.payload_hash not in (self.pushed_hash, self.failed_hash)

    @property
    def resource(self) -> dict[str, Any]:
        """The bulk-import profile resource (parsed only for profiles that are sent)."""
        return cast(dict[str, Any], orjson.loads(self.resource_json))

    @property
    def match_key(self) -> str:
        """How Klaviyo will identify the profile: `email:…`, `phone:…` or `id:…`."""
        if self.email:
            return "email:" + self.email.lower()
        if self.phone:
            return "phone:" + self.phone
        return "id:" + str(self.klaviyo_profile_id)


def profile_rows(
    conn: sa.Connection, batch: int = READ_BATCH, bucket: Bucket | None = None
) -> Iterator[ProfileRow]:
    """Every live customer Klaviyo can identify (of `bucket` only, if given), in id order,
    batch by batch."""
    sql = CUSTOMERS_SQL if bucket is None else BUCKET_CUSTOMERS_SQL
    params: dict[str, Any] = {} if bucket is None else dict(bucket.params)
    after = "00000000-0000-0000-0000-000000000000"
    while True:
        rows = conn.execute(sql, {**params, "after": after, "limit": batch}).all()
        for row in rows:
            yield ProfileRow(
                customer_id=row.customer_id,
                resource_json=row.resource,
                email=row.email,
                phone=row.phone_normalized,
                payload_hash=row.payload_hash,
                pushed_hash=row.pushed_hash,
                failed_hash=row.failed_hash,
                klaviyo_profile_id=row.klaviyo_profile_id or row.klaviyo_id,
                segments=tuple(row.segments or ()),
                suppressed=bool(row.suppressed),
                created_at=row.created_at,
            )
        if len(rows) < batch:
            return
        after = rows[-1].customer_id
