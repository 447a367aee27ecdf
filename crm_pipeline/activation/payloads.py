"""What the CRM pushes onto each customer's Klaviyo profile, and its hash.

A profile resource carries one identifier (email, else phone, else the Klaviyo id we hold:
Klaviyo matches on it) and the CRM properties marketers segment and personalise on. Nothing
about consent is ever sent: subscribing is the customer's act, not the pipeline's. The hash of
the resource decides whether the customer is sent again (like the Firestore mirror's hash).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.firestore.documents import LIVE_CONDITION

# customers read per round trip; the sync holds only the changed ones
READ_BATCH = 5_000

_SUBSCRIPTIONS = "ks.source_data -> 'attributes' -> 'subscriptions'"

CUSTOMERS_SQL = sa.text(
    f"""
SELECT c.id::text AS customer_id, c.email, c.phone_normalized, c.created_at,
       m.lifetime_value, m.predicted_ltv, m.churn_probability, m.predicted_next_order_date,
       m.engagement_score,
       coalesce((SELECT array_agg(s.segment_name ORDER BY s.segment_name)
                 FROM customer_segments s
                 WHERE s.customer_id = c.id AND (s.expires_at IS NULL OR s.expires_at > now())),
                '{{}}') AS segments,
       k.external_id AS klaviyo_id, coalesce(k.suppressed, false) AS suppressed,
       st.payload_hash, st.failed_hash, st.klaviyo_profile_id
FROM customers c
LEFT JOIN customer_metrics m ON m.customer_id = c.id
LEFT JOIN klaviyo_profile_state st ON st.customer_id = c.id
LEFT JOIN LATERAL (
    SELECT ks.external_id,
           jsonb_array_length(coalesce({_SUBSCRIPTIONS} -> 'email' -> 'marketing'
                                       -> 'suppression', '[]'::jsonb)) > 0 AS suppressed
    FROM customer_sources ks
    WHERE ks.customer_id = c.id AND ks.source = 'klaviyo' AND ks.deleted_at IS NULL
    ORDER BY ks.source_updated_at DESC NULLS LAST LIMIT 1
) k ON true
WHERE {LIVE_CONDITION} AND c.id > CAST(:after AS uuid)
  AND (c.email IS NOT NULL OR c.phone_normalized IS NOT NULL OR k.external_id IS NOT NULL)
ORDER BY c.id
LIMIT :limit
"""
)


@dataclass(frozen=True)
class ProfileRow:
    """One customer as the sync sees it: the resource to push and what was pushed before."""

    customer_id: str
    resource: dict[str, Any]
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
    def match_key(self) -> str:
        """How Klaviyo will identify the profile: `email:…`, `phone:…` or `id:…`."""
        attrs = self.resource.get("attributes") or {}
        if attrs.get("email"):
            return "email:" + str(attrs["email"]).lower()
        if attrs.get("phone_number"):
            return "phone:" + str(attrs["phone_number"])
        return "id:" + str(self.resource.get("id"))


def _number(value: Any, digits: int) -> float | None:
    if value is None:
        return None
    return round(float(value), digits)


def _day(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return None


def _family(segments: tuple[str, ...], prefix: str) -> str | None:
    return next((s.removeprefix(prefix) for s in segments if s.startswith(prefix)), None)


def crm_properties(customer_id: str, row: Any, segments: tuple[str, ...]) -> dict[str, Any]:
    """The CRM properties of one customer (names documented in docs/activation.md); a property
    without a value is left out rather than sent as null."""
    values: dict[str, Any] = {
        "crm_customer_id": customer_id,
        "crm_lifetime_value": _number(row.lifetime_value, 2),
        "crm_predicted_ltv": _number(row.predicted_ltv, 2),
        "crm_churn_probability": _number(row.churn_probability, 3),
        "crm_predicted_next_order_date": _day(row.predicted_next_order_date),
        "crm_engagement_score": _number(row.engagement_score, 1),
        "crm_rfm_segment": _family(segments, "rfm:"),
        "crm_value_tier": _family(segments, "value:"),
        "crm_vip": "vip" in segments,
        "crm_segments": list(segments),
    }
    return {k: v for k, v in values.items() if v is not None}


def profile_resource(row: Any, segments: tuple[str, ...]) -> dict[str, Any]:
    """The bulk-import profile resource: one identifier, then the CRM properties."""
    attributes: dict[str, Any] = {}
    resource: dict[str, Any] = {"type": "profile"}
    if row.email:
        attributes["email"] = row.email
    elif row.phone_normalized:
        attributes["phone_number"] = row.phone_normalized
    else:
        resource["id"] = row.klaviyo_id
    attributes["properties"] = crm_properties(row.customer_id, row, segments)
    resource["attributes"] = attributes
    return resource


def payload_hash(resource: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()


def profile_rows(conn: sa.Connection, batch: int = READ_BATCH) -> Iterator[ProfileRow]:
    """Every live customer Klaviyo can identify, in id order, batch by batch."""
    after = "00000000-0000-0000-0000-000000000000"
    while True:
        rows = conn.execute(CUSTOMERS_SQL, {"after": after, "limit": batch}).all()
        for row in rows:
            segments = tuple(row.segments or ())
            resource = profile_resource(row, segments)
            yield ProfileRow(
                customer_id=row.customer_id,
                resource=resource,
                payload_hash=payload_hash(resource),
                pushed_hash=row.payload_hash,
                failed_hash=row.failed_hash,
                klaviyo_profile_id=row.klaviyo_profile_id or row.klaviyo_id,
                segments=segments,
                suppressed=bool(row.suppressed),
                created_at=row.created_at,
            )
        if len(rows) < batch:
            return
        after = rows[-1].customer_id
