"""The shape of the admin app's Firestore read model, built set-based from PostgreSQL.

One query returns, per customer of a batch, the customer document and its `addresses`
subcollection as JSON. Python then only parses, hashes and turns timestamp strings into
datetimes. The content hash is a sha256 over a canonical JSON of the document and its addresses
(sorted keys, timestamps as UTC ISO text), so the same hash can be recomputed from what Firestore
returns; that is how drift is detected. The unbounded history subcollections (every order,
activity and note) have their own per-subdocument hashes: crm_pipeline.firestore.history. The
field-by-field shape is documented in docs/firestore-mirror.md.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
import sqlalchemy as sa

from crm_pipeline.firestore.queryable import add_query_fields
from crm_pipeline.normalize import parse_timestamp

CUSTOMERS = "customers"
ADDRESSES = "addresses"
ORDERS = "orders"
ACTIVITIES = "activities"
NOTES = "notes"
# Hashed with the customer document (bounded, rewritten with it).
ROOT_SUBCOLLECTIONS = (ADDRESSES,)
# Everything under customers/{id}: the addresses and the history (crm_pipeline.firestore.history).
SUBCOLLECTIONS = (ADDRESSES, ORDERS, ACTIVITIES, NOTES)
STATS = "stats"
STATS_DOCUMENT = "current"
SEGMENTS = "segments"

MAX_ADDRESSES = 50
MAX_LINE_ITEMS = 50

# Fields written by the mirror itself; not part of the content hash.
HASH_EXCLUDED = ("content_hash", "mirrored_at")

# Keys whose values are timestamps (canonical text in SQL, datetimes in Firestore).
TIMESTAMP_KEYS = frozenset(
    {
        "created_at",
        "updated_at",
        "last_active_at",
        "last_activity_at",
        "first_order_at",
        "last_order_at",
        "computed_at",
        "assigned_at",
        "expires_at",
        "last_synced_at",
        "cancelled_at",
        "occurred_at",
    }
)
# Free-form source data: copied as-is, never searched for timestamps.
OPAQUE_KEYS = frozenset({"properties"})

# A live customer is mirrored; anything else has its document deleted.
LIVE_CONDITION = "c.deleted_at IS NULL AND c.merged_into IS NULL AND c.redacted_at IS NULL"

_CUSTOMER_SELECT = f"""
SELECT
    c.id::text AS id,
    json_build_object(
        'customer_id', c.id,
        'first_name', c.first_name,
        'last_name', c.last_name,
        'full_name', c.full_name,
        'display_name', coalesce(c.full_name, c.email, c.phone_normalized, c.phone, 'Customer'),
        'initials', coalesce(
            nullif(upper(left(btrim(c.first_name), 1)
                         || coalesce(left(btrim(c.last_name), 1), '')), ''),
            nullif(upper(left(btrim(c.last_name), 1)), ''),
            nullif(upper(left(btrim(c.email), 1)), ''),
            '?'),
        'email', c.email,
        'phone', c.phone,
        'phone_normalized', c.phone_normalized,
        'status', c.status,
        'is_vip', c.status = 'vip',
        'is_blocked', c.status = 'blocked',
        'status_set_by', c.status_set_by,
        'customer_type', c.customer_type,
        'tags', c.tags,
        'notes', c.notes,
        'internal_notes', c.internal_notes,
        'marketing', json_build_object(
            'accepts_email', c.accepts_email_marketing,
            'accepts_sms', c.accepts_sms_marketing),
        'created_at', mirror_ts(c.created_at),
        'updated_at', mirror_ts(c.updated_at),
        'last_active_at', mirror_ts(c.last_active_at),
        'metrics', json_build_object(
            'total_orders', m.total_orders,
            'completed_orders', m.completed_orders,
            'cancelled_orders', m.cancelled_orders,
            'returned_orders', m.returned_orders,
            'total_spent', mirror_money(m.total_spent),
            'total_refunded', mirror_money(m.total_refunded),
            'net_revenue', mirror_money(m.net_revenue),
            'average_order_value', mirror_money(m.average_order_value),
            'lifetime_value', mirror_money(m.lifetime_value),
            'predicted_ltv', mirror_money(m.predicted_ltv),
            'items_purchased', m.items_purchased,
            'favorite_category', m.favorite_category,
            'favorite_brand', m.favorite_brand,
            'first_order_at', mirror_ts(m.first_order_date),
            'last_order_at', mirror_ts(m.last_order_date),
            'days_since_last_order', m.days_since_last_order,
            'email_opens', m.email_opens,
            'email_clicks', m.email_clicks,
            'open_rate', mirror_float(m.open_rate),
            'click_rate', mirror_float(m.click_rate),
            'engagement_score', mirror_float(m.engagement_score),
            'churn_probability', mirror_float(m.churn_probability),
            'risk_score', round(nullif(m.churn_probability, 'NaN') * 100)::int,
            'risk_level', CASE
                WHEN m.churn_probability IS NULL OR m.churn_probability = 'NaN' THEN NULL
                WHEN m.churn_probability >= 0.7 THEN 'high'
                WHEN m.churn_probability >= 0.4 THEN 'medium'
                ELSE 'low' END,
            'predicted_purchases_90d', mirror_float(m.predicted_purchases_90d),
            'predicted_next_order_date', to_char(m.predicted_next_order_date, 'YYYY-MM-DD'),
            'scoring_method', m.scoring_method,
            'last_activity_at', mirror_ts(c.last_active_at)),
        'segments', coalesce((
            SELECT json_agg(json_build_object(
                'name', s.segment_name,
                'type', s.segment_type,
                'confidence', mirror_float(s.confidence),
                'assigned_by', s.assigned_by,
                'assigned_at', mirror_ts(s.assigned_at),
                'expires_at', mirror_ts(s.expires_at)) ORDER BY s.segment_name)
            FROM customer_segments s WHERE s.customer_id = c.id), '[]'::json),
        'sources', coalesce((
            SELECT json_agg(json_build_object(
                'source', src.source,
                'external_id', src.external_id,
                'sync_status', src.sync_status,
                'last_synced_at', mirror_ts(src.last_synced_at))
                ORDER BY src.source, src.external_id)
            FROM customer_sources src
            WHERE src.customer_id = c.id AND src.deleted_at IS NULL), '[]'::json),
        'counts', json_build_object(
            'addresses', (SELECT count(*) FROM customer_addresses a WHERE a.customer_id = c.id),
            'orders', (SELECT count(*) FROM orders o WHERE o.customer_id = c.id),
            'activities', (SELECT count(*) FROM customer_activities x WHERE x.customer_id = c.id))
    )::text AS doc,
    coalesce((
        SELECT json_agg(json_build_object(
            'id', a.id,
            'source', a.source,
            'address_type', a.address_type,
            'is_default', a.is_default,
            'first_name', a.first_name,
            'last_name', a.last_name,
            'company', a.company,
            'address1', a.address1,
            'address2', a.address2,
            'city', a.city,
            'province', a.province,
            'province_code', a.province_code,
            'country', a.country,
            'country_code', a.country_code,
            'zip', a.zip,
            'phone', a.phone,
            'latitude', a.latitude,
            'longitude', a.longitude,
            'timezone', a.timezone,
            'updated_at', mirror_ts(a.updated_at)) ORDER BY a.rank)
        FROM (
            SELECT ca.*, row_number() OVER (
                ORDER BY ca.is_default DESC, (ca.source = 'shopify') DESC, ca.id) AS rank
            FROM customer_addresses ca WHERE ca.customer_id = c.id
            ORDER BY rank LIMIT {MAX_ADDRESSES}) a), '[]'::json)::text AS addresses
FROM customers c
LEFT JOIN customer_metrics m ON m.customer_id = c.id
"""

_BATCH_AFTER = sa.text(
    _CUSTOMER_SELECT
    + f" WHERE {LIVE_CONDITION} AND c.id > CAST(:after AS uuid) ORDER BY c.id LIMIT :limit"
)
_BATCH_FIRST = sa.text(_CUSTOMER_SELECT + f" WHERE {LIVE_CONDITION} ORDER BY c.id LIMIT :limit")
_BY_IDS = sa.text(
    _CUSTOMER_SELECT + f" WHERE {LIVE_CONDITION} AND c.id = ANY(CAST(:ids AS uuid[])) ORDER BY c.id"
)

# Fields of the metrics map and segments that are doubles even when the value is integral.
_FLOAT_METRICS = (
    "open_rate",
    "click_rate",
    "engagement_score",
    "churn_probability",
    "predicted_purchases_90d",
)
_DEFAULT_ADDRESS_FIELDS = (
    "id",
    "address_type",
    "address1",
    "address2",
    "city",
    "province",
    "province_code",
    "country",
    "country_code",
    "zip",
)
# Firestore rejects empty field names and names like __name__.
_RESERVED_FIELD = re.compile(r"^__.*__$")


@dataclass(slots=True)
class CustomerDocument:
    """A customer's Firestore document, its addresses (keyed by id) and their hash."""

    customer_id: str
    data: dict[str, Any]
    addresses: dict[str, dict[str, Any]] = field(default_factory=dict)
    content_hash: str = ""

    def subcollections(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The subcollections hashed and written with the document (ROOT_SUBCOLLECTIONS)."""
        return {ADDRESSES: self.addresses}

    @property
    def write_count(self) -> int:
        """Firestore writes needed to store this document with its addresses."""
        return 1 + len(self.addresses)

    @property
    def history_size(self) -> int:
        """How many orders and activities the customer has (its history's bulk)."""
        counts = self.data.get("counts") or {}
        return int(counts.get(ORDERS) or 0) + int(counts.get(ACTIVITIES) or 0)


def format_timestamp(value: datetime) -> str:
    """The canonical text of a timestamp, the same as SQL mirror_ts()."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sanitize_keys(value: Any) -> Any:
    """Free-form JSON made storable: Firestore refuses empty and __reserved__ field names."""
    if isinstance(value, dict):
        clean: dict[str, Any] = {}
        for key, item in value.items():
            if key == "" or _RESERVED_FIELD.match(key):
                key = f"_{key}_"
            clean[key] = _sanitize_keys(item)
        return clean
    if isinstance(value, list):
        return [_sanitize_keys(item) for item in value]
    return value


def _timestamps_to_datetimes(value: Any) -> Any:
    """Turn canonical timestamp strings under TIMESTAMP_KEYS into timezone-aware datetimes."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in OPAQUE_KEYS:
                continue
            if key in TIMESTAMP_KEYS and isinstance(item, str):
                value[key] = parse_timestamp(item)
            elif isinstance(item, dict | list):
                _timestamps_to_datetimes(item)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                _timestamps_to_datetimes(item)
    return value


def _canonical(value: Any) -> Any:
    """Firestore values back to the canonical JSON form (datetimes as mirror_ts text)."""
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def content_hash(
    data: Mapping[str, Any], subcollections: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> str:
    """sha256 of the canonical JSON of a document (minus mirror fields) and its addresses."""
    body = {key: value for key, value in data.items() if key not in HASH_EXCLUDED}
    canonical = {
        "customer": body,
        **{name: subcollections.get(name, {}) for name in ROOT_SUBCOLLECTIONS},
    }
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def firestore_content_hash(
    data: Mapping[str, Any], subcollections: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> str:
    """The content hash recomputed from documents as read back from Firestore."""
    return content_hash(
        _canonical(dict(data)),
        {name: _canonical(dict(subcollections.get(name, {}))) for name in ROOT_SUBCOLLECTIONS},
    )


def _build(row: Sequence[str]) -> CustomerDocument:
    customer_id, doc_json, addresses_json = row
    data = orjson.loads(doc_json)
    metrics = data["metrics"]
    for key in _FLOAT_METRICS:
        if isinstance(metrics.get(key), int):
            metrics[key] = float(metrics[key])
    for segment in data["segments"]:
        if isinstance(segment.get("confidence"), int):
            segment["confidence"] = float(segment["confidence"])
    addresses = orjson.loads(addresses_json)
    for address in addresses:
        for key in ("latitude", "longitude"):
            if isinstance(address.get(key), int):
                address[key] = float(address[key])
    data["default_address"] = (
        {key: addresses[0].get(key) for key in _DEFAULT_ADDRESS_FIELDS} if addresses else None
    )
    add_query_fields(data)
    document = CustomerDocument(
        customer_id=customer_id, data=data, addresses={str(a["id"]): a for a in addresses}
    )
    # Hash the canonical (text-timestamp) form first, then convert for Firestore in place.
    document.content_hash = content_hash(document.data, document.subcollections())
    _timestamps_to_datetimes(document.data)
    for docs in document.subcollections().values():
        for sub in docs.values():
            _timestamps_to_datetimes(sub)
    document.data["content_hash"] = document.content_hash
    return document


def fetch_customer_batch(
    conn: sa.Connection, after: str | None, limit: int
) -> list[CustomerDocument]:
    """The next `limit` live customers by id after `after` (keyset), as Firestore documents."""
    if after is None:
        rows = conn.execute(_BATCH_FIRST, {"limit": limit}).all()
    else:
        rows = conn.execute(_BATCH_AFTER, {"after": after, "limit": limit}).all()
    return [_build(tuple(row)) for row in rows]


def is_customer_id(value: str) -> bool:
    """Whether a Firestore document id can be a customer id (a uuid)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def fetch_customer_documents(conn: sa.Connection, ids: Iterable[str]) -> list[CustomerDocument]:
    """The documents of the given customers that are live (others are simply absent)."""
    id_list = sorted({i for i in ids if is_customer_id(i)})
    if not id_list:
        return []
    return [_build(tuple(row)) for row in conn.execute(_BY_IDS, {"ids": id_list}).all()]


def segment_document_id(name: str) -> str:
    """A Firestore-safe document id for a segment name ('/' is not allowed in ids)."""
    return quote(name, safe="") or "_"
