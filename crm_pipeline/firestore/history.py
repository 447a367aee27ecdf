"""A customer's complete history for the mirror: every order, activity and note, built in SQL.

These are the `orders`, `activities` and `notes` subcollections under customers/{id}. They grow
without bound, so unlike the customer document they are not hashed as one: each subdocument has
its own md5 (of the JSON text PostgreSQL builds), and a customer has one history hash over those
(md5 of "collection:id:md5" lines in byte order, computable in SQL or from built subdocuments).
A no-change run compares only the customer's history hash; the subdocuments are built in Python
only for customers whose hash moved.

Each subdocument carries its time as a Firestore timestamp (`created_at` for orders and notes,
`occurred_at` for activities), so the app pages a tab with orderBy(desc) + startAfter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.firestore.documents import (
    ACTIVITIES,
    MAX_LINE_ITEMS,
    NOTES,
    ORDERS,
    _canonical,
    _sanitize_keys,
    is_customer_id,
)

HISTORY = (ORDERS, ACTIVITIES, NOTES)
# The history hash of a customer with no orders, activities or notes.
EMPTY_HISTORY = "empty"

# (customer_id, collection, doc_id, doc) for the customers in :ids. One definition serves both
# the hash query and the document query, so what is hashed is what is written.
_SUBDOCUMENTS = f"""
SELECT o.customer_id, '{ORDERS}' AS collection, o.id::text AS doc_id, json_build_object(
        'id', o.id,
        'source', o.source,
        'external_id', o.external_id,
        'created_at', mirror_ts(o.created_at),
        'cancelled_at', mirror_ts(o.cancelled_at),
        'financial_status', o.financial_status,
        'fulfillment_status', o.fulfillment_status,
        'status', CASE
            WHEN o.cancelled_at IS NOT NULL THEN 'cancelled'
            WHEN o.financial_status IN ('refunded', 'partially_refunded') THEN o.financial_status
            WHEN o.fulfillment_status = 'fulfilled' THEN 'fulfilled'
            ELSE coalesce(o.financial_status, 'pending') END,
        'total_price', mirror_money(o.total_price),
        'total_refunded', mirror_money(o.total_refunded),
        'currency', o.currency,
        'item_count', coalesce(li.item_count, 0),
        'line_items', coalesce(li.items, '[]'::json))::text AS doc
FROM orders o
LEFT JOIN LATERAL (
    SELECT sum(l.quantity)::int AS item_count,
           (json_agg(json_build_object(
               'title', l.title,
               'vendor', l.vendor,
               'product_type', l.product_type,
               'quantity', l.quantity,
               'price', mirror_money(l.price)) ORDER BY l.id)
            FILTER (WHERE l.rn <= {MAX_LINE_ITEMS})) AS items
    FROM (SELECT l0.*, row_number() OVER (ORDER BY l0.id) AS rn
          FROM order_line_items l0 WHERE l0.order_id = o.id) l
) li ON true
WHERE o.customer_id = ANY(CAST(:ids AS uuid[]))
UNION ALL
SELECT x.customer_id, '{ACTIVITIES}', x.id::text, json_build_object(
        'id', x.id,
        'activity_type', x.activity_type,
        'occurred_at', mirror_ts(x.occurred_at),
        'source', x.source,
        'external_id', x.external_id,
        'session_id', x.session_id,
        'utm_source', x.utm_source,
        'utm_medium', x.utm_medium,
        'utm_campaign', x.utm_campaign,
        'properties', x.properties)::text
FROM customer_activities x
WHERE x.customer_id = ANY(CAST(:ids AS uuid[]))
UNION ALL
SELECT n.customer_id, '{NOTES}', n.id::text, json_build_object(
        'id', n.id,
        'kind', n.kind,
        'body', n.body,
        'actor', n.actor,
        'created_at', mirror_ts(n.created_at))::text
FROM customer_notes n
WHERE n.customer_id = ANY(CAST(:ids AS uuid[]))
"""

_HISTORY_HASHES = sa.text(
    f"""
    SELECT h.customer_id::text,
           md5(string_agg(h.collection || ':' || h.doc_id || ':' || md5(h.doc), ','
                          ORDER BY h.collection COLLATE "C", h.doc_id COLLATE "C"))
    FROM ({_SUBDOCUMENTS}) h
    GROUP BY h.customer_id
    """
)
_HISTORY_DOCUMENTS = sa.text(
    f"SELECT h.customer_id::text, h.collection, h.doc_id, h.doc, decode(md5(h.doc), 'hex') "
    f"FROM ({_SUBDOCUMENTS}) h"
)


@dataclass(slots=True)
class History:
    """One customer's history subdocuments: data keyed by collection then id, and their md5s."""

    docs: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {name: {} for name in HISTORY}
    )
    hashes: dict[str, dict[str, bytes]] = field(
        default_factory=lambda: {name: {} for name in HISTORY}
    )

    @property
    def size(self) -> int:
        return sum(len(docs) for docs in self.docs.values())


def history_hashes(conn: sa.Connection, ids: Iterable[str]) -> dict[str, str]:
    """The history hash of each customer (EMPTY_HISTORY for one with no history)."""
    id_list = sorted({i for i in ids if is_customer_id(i)})
    if not id_list:
        return {}
    found = {row[0]: row[1] for row in conn.execute(_HISTORY_HASHES, {"ids": id_list})}
    return {cid: found.get(cid, EMPTY_HISTORY) for cid in id_list}


# The timestamp fields of each kind (mirror_ts text, which fromisoformat reads as aware UTC).
# Named rather than searched for: the hot path of a first sync, and line items and properties
# hold none.
_TIME_KEYS = {
    ORDERS: ("created_at", "cancelled_at"),
    ACTIVITIES: ("occurred_at",),
    NOTES: ("created_at",),
}


def history_hash(history: History) -> str:
    """The history hash computed from built subdocuments, equal to the SQL one (same lines, same
    byte order): a customer never mirrored gets its hash without the hash query."""
    lines = sorted(
        (name, doc_id, digest.hex())
        for name in HISTORY
        for doc_id, digest in history.hashes[name].items()
    )
    if not lines:
        return EMPTY_HISTORY
    text = ",".join(f"{name}:{doc_id}:{digest}" for name, doc_id, digest in lines)
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _build(collection: str, doc_json: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(doc_json)
    if collection == ACTIVITIES:
        doc["properties"] = _sanitize_keys(doc.get("properties") or {})
    for key in _TIME_KEYS[collection]:
        value = doc.get(key)
        if value is not None:
            doc[key] = datetime.fromisoformat(value)
    return doc


def fetch_history(conn: sa.Connection, ids: Iterable[str]) -> dict[str, History]:
    """Every order, activity and note of the given customers, as Firestore subdocuments."""
    id_list = sorted({i for i in ids if is_customer_id(i)})
    histories: dict[str, History] = {cid: History() for cid in id_list}
    if not id_list:
        return histories
    for cid, collection, doc_id, doc_json, digest in conn.execute(
        _HISTORY_DOCUMENTS, {"ids": id_list}
    ):
        history = histories[cid]
        history.docs[collection][doc_id] = _build(collection, doc_json)
        history.hashes[collection][doc_id] = bytes(digest)
    return histories


def history_digest(subcollections: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """sha256 of the canonical JSON of a customer's history subdocuments, from either side
    (built from PostgreSQL or read back from Firestore): what consistency checks compare."""
    canonical = {name: _canonical(dict(subcollections.get(name, {}))) for name in HISTORY}
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
