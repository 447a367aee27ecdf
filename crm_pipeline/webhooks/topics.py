# Over 500 lines on purpose: one small handler per Shopify/Klaviyo topic plus the registry that
# maps topics to them; each section (customers, deltas, orders, Klaviyo) is short and they share
# the ApplyContext helpers at the top. Split by section if another topic family arrives.
"""Shopify and Klaviyo topics: what each delivery changes in the CRM.

Every handler is idempotent and order-tolerant: full records go through the ingest loaders
(content hash + only-newer-wins on updated_at), deltas through event-time registers
(`state.py`), refunds are keyed by refund id. So a redelivery, a replay or a late delivery ends
in the same state as applying everything once in triggered_at order.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.activation.consent import OPT_OUT_ACTIVITIES, apply_opt_outs
from crm_pipeline.ingest.customers import (
    apply_survivorship,
    observed_after,
    soft_delete_customers,
)
from crm_pipeline.ingest.source_state import SourceState, load_source, save_folded
from crm_pipeline.mapping.klaviyo import map_event, map_profile, webhook_item
from crm_pipeline.mapping.records import content_hash
from crm_pipeline.mapping.shopify import map_customer, map_order, money
from crm_pipeline.normalize import parse_timestamp, split_tags
from crm_pipeline.webhooks.context import ApplyContext, Outcome, PermanentError, UnknownSubject
from crm_pipeline.webhooks.subjects import shopify_id

Handler = Callable[[ApplyContext], Outcome]


def _payload(ctx: ApplyContext) -> dict[str, Any]:
    if not isinstance(ctx.payload, dict):
        raise PermanentError("payload is not a JSON object")
    return ctx.payload


def _customer_ref(payload: dict[str, Any]) -> str | None:
    for key in ("customerId", "customer_id", "admin_graphql_api_id", "id"):
        ident = shopify_id(payload.get(key))
        if ident:
            return ident
    customer = payload.get("customer")
    return shopify_id(customer.get("id")) if isinstance(customer, dict) else None


def _check_quarantine(loader: Any, what: str) -> None:
    """A record the loader quarantined fails its delivery, naming that record's reasons only."""
    if loader.load_quarantined:
        reasons = ", ".join(sorted(loader.load_quarantined)) or "invalid"
        raise PermanentError(f"invalid {what}: {reasons}")


def link_orders_of(conn: sa.Connection, external_id: str) -> set[str]:
    """Orders that arrived before their Shopify customer get linked once it is known."""
    return set(
        conn.execute(
            sa.text(
                "UPDATE orders o SET customer_id = s.customer_id FROM customer_sources s "
                "WHERE o.customer_id IS NULL AND o.source = 'shopify' "
                "AND o.customer_external_id = :ext AND s.source = 'shopify' "
                "AND s.external_id = :ext RETURNING s.customer_id::text"
            ),
            {"ext": external_id},
        ).scalars()
    )


# ------------------------------------------------------------------ Shopify customers
def _deleted_since(existing: Any, updated_at: Any) -> bool:
    """The source row was deleted after this record's state: the record is no proof of life.
    A newer one is, and revives it (`CustomerLoader`, `revive_sources`)."""
    return (
        existing is not None
        and existing.deleted_at is not None
        and not observed_after(existing.deleted_at, updated_at, None)
    )


def shopify_customer_upsert(ctx: ApplyContext) -> Outcome:
    """customers/create, customers/update, customers/enable, customers/disable: a full record."""
    raw = dict(_payload(ctx))
    external_id = shopify_id(raw.get("id"))
    if not external_id:
        raise PermanentError("customer payload without id")
    if not raw.get("updated_at"):
        raw["updated_at"] = ctx.event_time().isoformat()
    existing = load_source(ctx.conn, "shopify", external_id)
    record = map_customer(raw)
    if _deleted_since(existing, record.source_updated_at):
        return Outcome("ignored_deleted")
    outcome = "applied"
    if existing is not None and existing.deleted_at is not None:
        outcome = "revived"  # the loader brings it back (unless the person was redacted)
    elif existing is not None:
        if existing.content_hash == content_hash(raw):
            outcome = "duplicate"
        elif (
            existing.source_updated_at
            and record.source_updated_at
            and record.source_updated_at < existing.source_updated_at
        ):
            outcome = "stale"
    loader = ctx.loaders.shopify_customers
    refused = loader.report.skipped_redacted
    revived = loader.report.revived
    loader.load([record])
    _check_quarantine(loader, "customer")
    if loader.report.skipped_redacted > refused:
        return Outcome("refused_redacted")
    if outcome == "revived" and loader.report.revived == revived:
        return Outcome("ignored_deleted")  # staff deleted, merged away: it stays so
    row = load_source(ctx.conn, "shopify", external_id)
    if row is None:  # only when the loader refused it
        return Outcome("refused")
    state = SourceState(row.webhook_state)
    if existing is not None:
        state.shopify_record(existing.source_data, existing.source_updated_at)
    state.shopify_record(raw, record.source_updated_at)
    save_folded(ctx.conn, row.id, state)
    apply_survivorship(ctx.conn, {row.customer_id})
    return Outcome(outcome, {row.customer_id} | link_orders_of(ctx.conn, external_id))


def soft_delete_source(ctx: ApplyContext, source: str, external_id: str) -> Outcome:
    """Like a reconcile: the source record goes; the customer goes when nothing else holds it."""
    conn = ctx.conn
    row = load_source(conn, source, external_id)
    if row is None:
        # Unknown yet: keep a deleted marker so a late, older create cannot resurrect it.
        customer_id = conn.execute(
            sa.text(
                "INSERT INTO customers (deleted_at, deleted_by_source) VALUES (now(), true) "
                "RETURNING id::text"
            )
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO customer_sources (customer_id, source, external_id, sync_status, "
                "deleted_at, source_updated_at) VALUES (:cid, :source, :ext, 'deleted', now(), "
                ":at)"
            ),
            {"cid": customer_id, "source": source, "ext": external_id, "at": ctx.event_time()},
        )
        return Outcome("applied")
    if row.deleted_at is not None:
        return Outcome("duplicate")
    conn.execute(
        sa.text(
            "UPDATE customer_sources SET deleted_at = now(), sync_status = 'deleted' WHERE id = :id"
        ),
        {"id": row.id},
    )
    soft_delete_customers(conn, source, [row.customer_id])
    apply_survivorship(conn, {row.customer_id})
    return Outcome("applied", {row.customer_id})


def shopify_customer_delete(ctx: ApplyContext) -> Outcome:
    external_id = shopify_id(_payload(ctx).get("id"))
    if not external_id:
        raise PermanentError("customers/delete without id")
    return soft_delete_source(ctx, "shopify", external_id)


def merge_customers(conn: sa.Connection, keep: str, drop: str) -> None:
    """Move everything of `drop` to `keep`; `drop` stays as a pointer (merged_into, deleted_at).

    Staff data is combined, never lost: manual tags are unioned, internal notes appended, a
    manual status on either side survives.
    """
    params = {"keep": keep, "drop": drop}
    for table in (
        "customer_sources",
        "customer_addresses",
        "orders",
        "customer_activities",
        "customer_notes",
    ):
        conn.execute(
            sa.text(
                f"UPDATE {table} SET customer_id = CAST(:keep AS uuid) "  # table from the list
                "WHERE customer_id = CAST(:drop AS uuid)"
            ),
            params,
        )
    conn.execute(
        sa.text(
            """
            INSERT INTO customer_segments AS s (customer_id, segment_name, segment_type, confidence,
                                                assigned_by, assigned_at, expires_at)
            SELECT CAST(:keep AS uuid), segment_name, segment_type, confidence, assigned_by,
                   assigned_at, expires_at
            FROM customer_segments
            WHERE customer_id = CAST(:drop AS uuid) AND assigned_by = 'manual'
            ON CONFLICT (customer_id, segment_name) DO NOTHING
            """
        ),
        params,
    )
    conn.execute(
        sa.text("DELETE FROM customer_segments WHERE customer_id = CAST(:drop AS uuid)"), params
    )
    conn.execute(
        sa.text(
            """
            INSERT INTO staff_field_versions (customer_id, field, version_at)
            SELECT CAST(:keep AS uuid), field, version_at FROM staff_field_versions
            WHERE customer_id = CAST(:drop AS uuid)
            ON CONFLICT (customer_id, field) DO UPDATE
                SET version_at = greatest(staff_field_versions.version_at, excluded.version_at)
            """
        ),
        params,
    )
    conn.execute(
        sa.text(
            """
            UPDATE customers k SET
                manual_tags = ARRAY(SELECT DISTINCT x FROM unnest(k.manual_tags || d.manual_tags) x
                                    ORDER BY x),
                internal_notes = CASE
                    WHEN d.internal_notes IS NULL OR d.internal_notes = k.internal_notes
                        THEN k.internal_notes
                    WHEN k.internal_notes IS NULL THEN d.internal_notes
                    ELSE k.internal_notes || E'\n\n' || d.internal_notes END,
                status = CASE WHEN k.status_set_by = 'manual' THEN k.status
                              WHEN d.status_set_by = 'manual' THEN d.status ELSE k.status END,
                status_set_by = CASE WHEN 'manual' IN (k.status_set_by, d.status_set_by)
                                     THEN 'manual' ELSE 'system' END,
                last_active_at = greatest(k.last_active_at, d.last_active_at),
                created_at = least(k.created_at, d.created_at)
            FROM customers d
            WHERE k.id = CAST(:keep AS uuid) AND d.id = CAST(:drop AS uuid)
            """
        ),
        params,
    )
    conn.execute(
        sa.text(
            "UPDATE customers SET merged_into = CAST(:keep AS uuid), "
            "deleted_at = coalesce(deleted_at, now()) WHERE id = CAST(:drop AS uuid)"
        ),
        params,
    )
    apply_survivorship(conn, {keep, drop})


def shopify_customer_merge(ctx: ApplyContext) -> Outcome:
    """customers/merge: the deleted customer's sources, orders, activities, addresses move over."""
    payload = _payload(ctx)
    status = str(payload.get("status") or "completed").lower()
    if status not in ("completed", "complete", "success", "succeeded"):
        return Outcome("ignored_incomplete")
    kept = shopify_id(
        payload.get("admin_graphql_api_customer_kept_id")
        or payload.get("customer_kept_id")
        or payload.get("kept_customer_id")
    )
    gone = shopify_id(
        payload.get("admin_graphql_api_customer_deleted_id")
        or payload.get("customer_deleted_id")
        or payload.get("deleted_customer_id")
    )
    if not kept or not gone or kept == gone:
        raise PermanentError("customers/merge needs distinct kept and deleted customer ids")
    kept_row = load_source(ctx.conn, "shopify", kept)
    if kept_row is None:
        raise UnknownSubject(f"shopify customer {kept} (merge survivor) not known yet")
    gone_row = load_source(ctx.conn, "shopify", gone)
    if gone_row is None:
        outcome = soft_delete_source(ctx, "shopify", gone)
        ctx.conn.execute(
            sa.text(
                "UPDATE customers c SET merged_into = CAST(:keep AS uuid) FROM customer_sources s "
                "WHERE s.customer_id = c.id AND s.source = 'shopify' AND s.external_id = :gone"
            ),
            {"keep": kept_row.customer_id, "gone": gone},
        )
        return Outcome(outcome.outcome, {kept_row.customer_id})
    if gone_row.customer_id == kept_row.customer_id and gone_row.deleted_at is not None:
        return Outcome("duplicate")
    drop = gone_row.customer_id
    if drop != kept_row.customer_id:
        merge_customers(ctx.conn, kept_row.customer_id, drop)
    ctx.conn.execute(
        sa.text(
            "UPDATE customer_sources SET deleted_at = coalesce(deleted_at, now()), "
            "sync_status = 'deleted' WHERE id = :id"
        ),
        {"id": gone_row.id},
    )
    apply_survivorship(ctx.conn, {kept_row.customer_id})
    return Outcome("applied", {kept_row.customer_id, drop})


# ------------------------------------------------------------------ Shopify deltas
def _apply_delta(ctx: ApplyContext, change: Callable[[SourceState], None]) -> Outcome:
    external_id = _customer_ref(_payload(ctx))
    if not external_id:
        raise PermanentError(f"{ctx.delivery.topic} without a customer id")
    row = load_source(ctx.conn, "shopify", external_id)
    if row is None:
        raise UnknownSubject(f"shopify customer {external_id} not known yet")
    if row.deleted_at is not None:
        return Outcome("ignored_deleted")
    state = SourceState(row.webhook_state)
    state.shopify_record(row.source_data, row.source_updated_at)
    seeded = orjson.dumps(state.data, option=orjson.OPT_SORT_KEYS)
    change(state)
    changed = orjson.dumps(state.data, option=orjson.OPT_SORT_KEYS) != seeded
    save_folded(ctx.conn, row.id, state)
    apply_survivorship(ctx.conn, {row.customer_id})
    return Outcome("applied" if changed else "stale", {row.customer_id})


def _tags(payload: dict[str, Any]) -> list[str]:
    raw = payload.get("tags")
    try:
        if raw is None:
            raise TypeError("no tags")
        return split_tags(raw)
    except TypeError as exc:
        raise PermanentError("tags payload without a tags list") from exc


def shopify_tags(added: bool) -> Handler:
    def handler(ctx: ApplyContext) -> Outcome:
        tags, at = _tags(_payload(ctx)), ctx.event_time()

        def change(state: SourceState) -> None:
            for tag in tags:
                state.tag(tag, added, at)

        return _apply_delta(ctx, change)

    handler.__doc__ = f"customer.tags_{'added' if added else 'removed'}: per-tag event-time change."
    return handler


def shopify_consent(channel: str) -> Handler:
    key = f"{channel}_marketing_consent"

    def handler(ctx: ApplyContext) -> Outcome:
        block = _payload(ctx).get(key)
        if not isinstance(block, dict):
            raise PermanentError(f"{ctx.delivery.topic} without {key}")
        subscribed = str(block.get("state") or "").lower() == "subscribed"
        at = parse_timestamp(block.get("consent_updated_at")) or ctx.event_time()
        return _apply_delta(ctx, lambda state: state.consent(channel, subscribed, at))

    handler.__doc__ = f"{channel} marketing consent change, newest consent time wins."
    return handler


_ID_KEYS = {"id", "customerId", "customer_id", "admin_graphql_api_id", "occurredAt", "occurred_at"}


def shopify_purchasing_summary(ctx: ApplyContext) -> Outcome:
    """customers/purchasing_summary: kept under custom_attributes.shopify.purchasing_summary."""
    payload = _payload(ctx)
    summary = {k: v for k, v in payload.items() if k not in _ID_KEYS}
    at = ctx.event_time()
    return _apply_delta(ctx, lambda state: state.value("purchasing_summary", summary, at))


# ------------------------------------------------------------------ Shopify orders
def _record_included_refunds(conn: sa.Connection, raw: dict[str, Any]) -> None:
    """Refunds carried inside an order payload are counted in its totals: remember their ids."""
    refunds = [r for r in raw.get("refunds") or [] if isinstance(r, dict) and r.get("id")]
    if not refunds:
        return
    conn.execute(
        sa.text(
            "INSERT INTO order_refunds (source, refund_id, order_id, created_at) "
            "SELECT 'shopify', r, o.id, now() FROM orders o, unnest(CAST(:ids AS text[])) r "
            "WHERE o.source = 'shopify' AND o.external_id = :ext ON CONFLICT DO NOTHING"
        ),
        {"ids": [shopify_id(r["id"]) for r in refunds], "ext": shopify_id(raw.get("id"))},
    )


def shopify_order_upsert(ctx: ApplyContext) -> Outcome:
    """orders/create, orders/updated, orders/cancelled (and paid/fulfilled): a full order."""
    raw = dict(_payload(ctx))
    external_id = shopify_id(raw.get("id"))
    if not external_id:
        raise PermanentError("order payload without id")
    if not raw.get("updated_at"):
        raw["updated_at"] = ctx.event_time().isoformat()
    record = map_order(raw)
    held = ctx.conn.execute(
        sa.text(
            "SELECT content_hash, source_updated_at FROM orders "
            "WHERE source = 'shopify' AND external_id = :ext FOR UPDATE"
        ),
        {"ext": external_id},
    ).one_or_none()
    outcome = "applied"
    if held is not None:
        if held.content_hash == content_hash(raw):
            outcome = "duplicate"
        elif (
            held.source_updated_at
            and record.source_updated_at
            and (record.source_updated_at < held.source_updated_at)
        ):
            outcome = "stale"
    loader = ctx.loaders.orders
    loader.load([record])
    _check_quarantine(loader, "order")
    if outcome == "applied":
        _record_included_refunds(ctx.conn, raw)
    owner = ctx.conn.execute(
        sa.text(
            "SELECT customer_id::text FROM orders WHERE source = 'shopify' AND external_id = :ext"
        ),
        {"ext": external_id},
    ).scalar_one_or_none()
    return Outcome(outcome, {owner} if owner else set())


def shopify_refund(ctx: ApplyContext) -> Outcome:
    """refunds/create: add the refund to the stored order once (keyed by refund id).

    Shopify bumps an order's updated_at when it is refunded, so an order stored with an
    updated_at at or after the refund already counts it; applying the refund moves the order's
    updated_at to the refund time so an older order payload cannot undo it.
    """
    payload = _payload(ctx)
    refund_id, order_ext = shopify_id(payload.get("id")), shopify_id(payload.get("order_id"))
    if not refund_id or not order_ext:
        raise PermanentError("refund payload needs id and order_id")
    order = ctx.conn.execute(
        sa.text(
            "SELECT id::text AS id, customer_id::text AS customer_id, total_price, "
            "total_refunded, source_updated_at FROM orders "
            "WHERE source = 'shopify' AND external_id = :ext FOR UPDATE"
        ),
        {"ext": order_ext},
    ).one_or_none()
    if order is None:
        raise UnknownSubject(f"shopify order {order_ext} not known yet")
    amount = Decimal("0")
    for tx in payload.get("transactions") or []:
        if (tx.get("kind") or "refund") == "refund" and tx.get("status", "success") == "success":
            amount += money(tx.get("amount")) or Decimal("0")
    items: dict[str, int] = {}
    for rli in payload.get("refund_line_items") or []:
        key = shopify_id(rli.get("line_item_id"))
        if key:
            items[key] = items.get(key, 0) + int(rli.get("quantity") or 0)
    refunded_at = parse_timestamp(payload.get("created_at")) or ctx.event_time()
    inserted = ctx.conn.execute(
        sa.text(
            "INSERT INTO order_refunds (source, refund_id, order_id, amount, refunded_items, "
            "created_at) VALUES ('shopify', :rid, CAST(:oid AS uuid), :amount, "
            "CAST(:items AS jsonb), :at) ON CONFLICT DO NOTHING RETURNING refund_id"
        ),
        {
            "rid": refund_id,
            "oid": order.id,
            "amount": amount,
            "items": orjson.dumps(items).decode(),
            "at": refunded_at,
        },
    ).scalar_one_or_none()
    touched = {order.customer_id} if order.customer_id else set()
    if inserted is None:
        return Outcome("duplicate", touched)
    if order.source_updated_at is not None and order.source_updated_at >= refunded_at:
        return Outcome("stale", touched)
    ctx.conn.execute(
        sa.text(
            """
            UPDATE orders SET
                total_refunded = least(total_price, total_refunded + :amount),
                financial_status = CASE
                    WHEN total_price > 0 AND total_refunded + :amount >= total_price THEN 'refunded'
                    WHEN total_refunded + :amount > 0 THEN 'partially_refunded'
                    ELSE financial_status END,
                source_updated_at = :at, content_hash = NULL
            WHERE id = CAST(:oid AS uuid)
            """
        ),
        {"amount": amount, "at": refunded_at, "oid": order.id},
    )
    if items:
        ctx.conn.execute(
            sa.text(
                "UPDATE order_line_items li SET refunded_quantity = "
                "least(li.quantity, li.refunded_quantity + q.qty) "
                "FROM unnest(CAST(:ids AS text[]), CAST(:qtys AS int[])) AS q(ext, qty) "
                "WHERE li.order_id = CAST(:oid AS uuid) AND li.external_id = q.ext"
            ),
            {"ids": list(items), "qtys": list(items.values()), "oid": order.id},
        )
    return Outcome("applied", touched)


# ------------------------------------------------------------------ Klaviyo
def _klaviyo_profile(ctx: ApplyContext, item: dict[str, Any]) -> Outcome:
    item = dict(item)
    attrs = dict(item.get("attributes") or {})
    if not item.get("id"):
        raise PermanentError("Klaviyo profile without id")
    if not attrs.get("updated"):
        attrs["updated"] = ctx.event_time().isoformat()
    item["attributes"] = attrs
    external_id = str(item["id"])
    existing = load_source(ctx.conn, "klaviyo", external_id)
    record = map_profile(item)
    if _deleted_since(existing, record.source_updated_at):
        return Outcome("ignored_deleted")
    outcome = "applied"
    if existing is not None and existing.deleted_at is not None:
        outcome = "revived"
    elif existing is not None:
        if existing.content_hash == content_hash(item):
            outcome = "duplicate"
        elif existing.source_updated_at and record.source_updated_at < existing.source_updated_at:
            outcome = "stale"
    loader = ctx.loaders.klaviyo_customers
    refused = loader.report.skipped_redacted
    revived = loader.report.revived
    loader.load([record])
    _check_quarantine(loader, "profile")
    if loader.report.skipped_redacted > refused:
        return Outcome("refused_redacted")
    if outcome == "revived" and loader.report.revived == revived:
        return Outcome("ignored_deleted")
    row = load_source(ctx.conn, "klaviyo", external_id)
    return Outcome(outcome, {row.customer_id} if row else set())


def klaviyo_item(ctx: ApplyContext) -> Outcome:
    """A Klaviyo webhook item: a profile (incl. subscription changes) or an event."""
    item = webhook_item(_payload(ctx))
    kind = item.get("type")
    topic = ctx.delivery.topic
    if kind == "profile" or (kind is None and topic.startswith("profile")):
        return _klaviyo_profile(ctx, item)
    if kind != "event" and not topic.startswith("event"):
        return Outcome("unknown_topic")
    included = [i for i in item.get("included") or [] if isinstance(i, dict)]
    metric_names = {
        str(i.get("id")): (i.get("attributes") or {}).get("name")
        for i in included
        if i.get("type") == "metric"
    }
    record = map_event(item, metric_names)
    if not record.external_id or not record.profile_external_id:
        raise PermanentError("Klaviyo event needs id and a profile relationship")
    touched: set[str] = set()
    known = load_source(ctx.conn, "klaviyo", record.profile_external_id)
    if known is None:
        profile = next(
            (
                i
                for i in included
                if i.get("type") == "profile" and str(i.get("id")) == record.profile_external_id
            ),
            None,
        )
        if profile is None:
            raise UnknownSubject(f"Klaviyo profile {record.profile_external_id} not known yet")
        touched |= _klaviyo_profile(ctx, profile).touched
    seen = ctx.conn.execute(
        sa.text(
            "SELECT customer_id::text FROM customer_activities "
            "WHERE source = 'klaviyo' AND external_id = :ext"
        ),
        {"ext": record.external_id},
    ).scalar_one_or_none()
    if seen is not None:
        return Outcome("duplicate", touched)
    loader = ctx.loaders.activities
    loader.load([record])
    _check_quarantine(loader, "event")
    owner = ctx.conn.execute(
        sa.text(
            "SELECT customer_id::text FROM customer_activities "
            "WHERE source = 'klaviyo' AND external_id = :ext"
        ),
        {"ext": record.external_id},
    ).scalar_one_or_none()
    if owner and record.activity_type in OPT_OUT_ACTIVITIES:  # consent comes back at once
        apply_opt_outs(ctx.conn, [owner])
    return Outcome("applied", touched | ({owner} if owner else set()))


# ------------------------------------------------------------------ registry
SHOPIFY_HANDLERS: dict[str, Handler] = {
    "customers/create": shopify_customer_upsert,
    "customers/update": shopify_customer_upsert,
    "customers/enable": shopify_customer_upsert,
    "customers/disable": shopify_customer_upsert,
    "customers/delete": shopify_customer_delete,
    "customers/merge": shopify_customer_merge,
    "customer.tags_added": shopify_tags(added=True),
    "customer.tags_removed": shopify_tags(added=False),
    "customers_email_marketing_consent/update": shopify_consent("email"),
    "customers_marketing_consent/update": shopify_consent("sms"),
    "customers/purchasing_summary": shopify_purchasing_summary,
    "orders/create": shopify_order_upsert,
    "orders/updated": shopify_order_upsert,
    "orders/cancelled": shopify_order_upsert,
    "orders/paid": shopify_order_upsert,
    "orders/fulfilled": shopify_order_upsert,
    "orders/partially_fulfilled": shopify_order_upsert,
    "refunds/create": shopify_refund,
}
