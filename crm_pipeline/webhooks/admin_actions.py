"""Staff actions from the admin app (source 'manual'); payloads are the admin_schema models.

Staff-owned fields (internal_notes, manual_tags, a manual status, manual segments) are written
only here and never by a source pull. Each is last-writer-wins by the time staff acted
(`occurred_at`), recorded per field in staff_field_versions, so replays and late deliveries do
not undo a newer action. Profile edits are a `manual` source record loaded through the
CustomerLoader, so identity resolution and survivorship (manual beats Shopify and Klaviyo)
apply as for any source.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.ingest.customers import apply_survivorship
from crm_pipeline.ingest.orders import bump_last_active
from crm_pipeline.ingest.source_state import load_source
from crm_pipeline.mapping.records import CustomerRecord, content_hash
from crm_pipeline.mapping.shopify import map_address
from crm_pipeline.normalize import normalize_email, normalize_phone, parse_timestamp, split_tags
from crm_pipeline.webhooks.admin_schema import (
    CUSTOMER_TYPES,
    AboutCustomer,
    ActivityRecord,
    CustomerCreate,
    CustomerNote,
    CustomerTags,
    CustomerUpdate,
    InvalidAdminAction,
    SegmentAdd,
    SegmentRemove,
    parse_admin_action,
)
from crm_pipeline.webhooks.context import ApplyContext, Outcome, PermanentError, UnknownSubject
from crm_pipeline.webhooks.subjects import shopify_id
from crm_pipeline.webhooks.topics import Handler

# Profile fields staff may set on a customer (the model refuses unknown fields; admin_id, tags
# and created_at are read elsewhere).
PROFILE_FIELDS = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "note",
    "customer_type",
    "accepts_email_marketing",
    "accepts_sms_marketing",
    "addresses",
)


@dataclass(slots=True)
class ManualCustomerRecord(CustomerRecord):
    """A staff-entered profile; adds the customer type survivorship reads from manual records."""

    customer_type: str | None = None

    def profile(self) -> dict[str, Any]:
        profile = CustomerRecord.profile(self)
        profile["customer_type"] = self.customer_type
        return profile


def map_admin_customer(admin_id: str, fields: dict[str, Any], at: datetime) -> CustomerRecord:
    """The admin app's customer shape (docs/webhook-processing.md) to a CustomerRecord."""
    addresses = []
    for i, raw in enumerate(a for a in fields.get("addresses") or [] if isinstance(a, dict)):
        address = map_address(raw, "")
        # address ids are unique per source: scope the admin app's ids by its customer id
        address.external_id = f"{admin_id}:{shopify_id(raw.get('id')) or i}"
        addresses.append(address)
    if addresses and not any(a.is_default for a in addresses):
        addresses[0].is_default = True
    region = next((a.country_code for a in addresses if a.is_default and a.country_code), None)
    customer_type = fields.get("customer_type")
    if customer_type is not None and customer_type not in CUSTOMER_TYPES:
        raise PermanentError(f"customer_type must be one of {', '.join(CUSTOMER_TYPES)}")
    accepts_email = fields.get("accepts_email_marketing")
    return ManualCustomerRecord(
        source="manual",
        external_id=admin_id,
        source_updated_at=at,
        raw_email=fields.get("email"),
        email=normalize_email(fields.get("email")),
        phone=fields.get("phone"),
        phone_normalized=normalize_phone(fields.get("phone"), region),
        first_name=fields.get("first_name") or None,
        last_name=fields.get("last_name") or None,
        note=fields.get("note") or None,
        accepts_email_marketing=accepts_email,
        email_consent_at=at if accepts_email is not None else None,
        accepts_sms_marketing=fields.get("accepts_sms_marketing"),
        created_at=parse_timestamp(fields.get("created_at")),
        addresses=addresses,
        raw={"admin_id": admin_id, "customer": fields},
        customer_type=customer_type,
    )


def _action(ctx: ApplyContext) -> Any:
    """The delivery's action, parsed by the same models the receiver validated it with."""
    if not isinstance(ctx.payload, dict):
        raise PermanentError("admin action payload is not a JSON object")
    # the row's topic and delivery id are the action's (rows landed before the action and its
    # id moved into the signed body carry them only there)
    data = {**ctx.payload, "action": ctx.delivery.topic}
    data.setdefault("action_id", ctx.delivery.delivery_id)
    try:
        return parse_admin_action(data)
    except InvalidAdminAction as exc:
        raise PermanentError(f"invalid admin action: {exc}") from exc


def _as_uuid(value: str) -> str | None:
    """The canonical text of a uuid, or None for anything else (no customer has that id)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def resolve_customer(conn: sa.Connection, ref: AboutCustomer) -> str:
    """The live CRM customer an action is about, following merges (customer_id, admin_id, ...)."""
    customer_id = None
    if ref.customer_id:
        # compared as a uuid, so the primary key's index answers (id::text = :id read every
        # customer per delivery: 10k deliveries took 308 s at 10k customers)
        wanted = _as_uuid(ref.customer_id)
        customer_id = (
            None
            if wanted is None
            else conn.execute(
                sa.text("SELECT id::text FROM customers WHERE id = CAST(:id AS uuid)"),
                {"id": wanted},
            ).scalar_one_or_none()
        )
    elif ref.admin_id or ref.shopify_customer_id:
        source = "manual" if ref.admin_id else "shopify"
        ext = ref.admin_id if source == "manual" else shopify_id(ref.shopify_customer_id)
        customer_id = conn.execute(
            sa.text(
                "SELECT customer_id::text FROM customer_sources "
                "WHERE source = :source AND external_id = :ext"
            ),
            {"source": source, "ext": ext},
        ).scalar_one_or_none()
    elif ref.email:
        customer_id = conn.execute(
            sa.text(
                "SELECT id::text FROM customers WHERE email_lowercase = :email "
                "AND deleted_at IS NULL"
            ),
            {"email": normalize_email(ref.email)},
        ).scalar_one_or_none()
    else:
        raise PermanentError(
            "admin action names no customer (customer_id, admin_id, shopify_customer_id or email)"
        )
    if customer_id is None:
        raise UnknownSubject("the customer of this admin action is not known yet")
    for _ in range(10):  # follow merges to the surviving customer
        merged = conn.execute(
            sa.text("SELECT merged_into::text FROM customers WHERE id = CAST(:id AS uuid)"),
            {"id": customer_id},
        ).scalar_one_or_none()
        if merged is None:
            break
        customer_id = merged
    return customer_id


def staff_version_newer(conn: sa.Connection, customer_id: str, field: str, at: datetime) -> bool:
    """Record `at` as the field's version when newer; False means a newer action already won."""
    return (
        conn.execute(
            sa.text(
                "INSERT INTO staff_field_versions (customer_id, field, version_at) "
                "VALUES (CAST(:cid AS uuid), :field, :at) "
                "ON CONFLICT (customer_id, field) DO UPDATE "
                "SET version_at = excluded.version_at "
                "WHERE staff_field_versions.version_at < excluded.version_at RETURNING 1"
            ),
            {"cid": customer_id, "field": field, "at": at},
        ).scalar_one_or_none()
        is not None
    )


def _set_manual_tags(
    ctx: ApplyContext, customer_id: str, add: list[str], remove: list[str], at: datetime
) -> bool:
    applied_add = [t for t in add if staff_version_newer(ctx.conn, customer_id, f"tag:{t}", at)]
    applied_remove = [
        t for t in remove if staff_version_newer(ctx.conn, customer_id, f"tag:{t}", at)
    ]
    if not applied_add and not applied_remove:
        return False
    ctx.conn.execute(
        sa.text(
            "UPDATE customers SET manual_tags = ARRAY(SELECT DISTINCT x FROM "
            "unnest(manual_tags || CAST(:add AS text[])) x WHERE x <> ALL(CAST(:rm AS text[])) "
            "ORDER BY x) WHERE id = CAST(:cid AS uuid)"
        ),
        {"add": applied_add, "rm": applied_remove, "cid": customer_id},
    )
    # the effective tags drop a removed manual tag unless a source still carries it
    ctx.conn.execute(
        sa.text(
            "UPDATE customers SET tags = ARRAY(SELECT DISTINCT x "
            "FROM unnest(tags || manual_tags) x "
            "WHERE x <> ALL(CAST(:rm AS text[])) ORDER BY x) WHERE id = CAST(:cid AS uuid)"
        ),
        {"rm": applied_remove, "cid": customer_id},
    )
    apply_survivorship(ctx.conn, {customer_id})
    return True


# ------------------------------------------------------------------ actions
def customer_upsert(ctx: ApplyContext) -> Outcome:
    """customer.create / customer.update: a manual source record, patched field by field."""
    action: CustomerCreate | CustomerUpdate = _action(ctx)
    fields = action.customer.model_dump(exclude_unset=True)
    at = ctx.event_time()
    admin_id = action.admin_id or action.customer.admin_id
    target: str | None = None
    if action.action != "customer.create" or action.customer_id:
        if action.customer_id or not admin_id:
            target = resolve_customer(ctx.conn, action)
    if not admin_id:
        if target is None:
            raise PermanentError("customer.create needs admin_id (the admin app's id)")
        admin_id = f"crm:{target}"
    admin_id = str(admin_id)
    existing = load_source(ctx.conn, "manual", admin_id)
    if existing is None and target is not None:
        # staff edit a customer that came from a source: link the manual record to it directly
        ctx.conn.execute(
            sa.text(
                "INSERT INTO customer_sources (customer_id, source, external_id) "
                "VALUES (CAST(:cid AS uuid), 'manual', :ext) ON CONFLICT DO NOTHING"
            ),
            {"cid": target, "ext": admin_id},
        )
        existing = load_source(ctx.conn, "manual", admin_id)
    if existing is not None and existing.deleted_at is not None:
        return Outcome("ignored_deleted")
    previous = (existing.source_data or {}).get("customer", {}) if existing is not None else {}
    merged = {**previous, **{k: v for k, v in fields.items() if k in PROFILE_FIELDS}}
    record = map_admin_customer(admin_id, merged, at)
    outcome = "applied"
    if existing is not None and existing.source_updated_at and at < existing.source_updated_at:
        outcome = "stale"
    elif existing is not None and existing.content_hash == content_hash(record.raw):
        outcome = "duplicate"
    loader = ctx.loaders.manual_customers
    refused = loader.report.skipped_redacted
    loader.load([record])
    if loader.load_quarantined:
        raise PermanentError(f"invalid customer: {', '.join(sorted(loader.load_quarantined))}")
    if loader.report.skipped_redacted > refused:
        return Outcome("refused_redacted")
    row = load_source(ctx.conn, "manual", admin_id)
    if row is None:
        return Outcome("refused")
    if "tags" in fields:
        _set_manual_tags(ctx, row.customer_id, split_tags(fields.get("tags")), [], at)
    return Outcome(outcome, {row.customer_id})


def customer_note(ctx: ApplyContext) -> Outcome:
    """customer.note: the full internal notes text (the editor saves it whole); kept in history."""
    action: CustomerNote = _action(ctx)
    text = action.internal_notes
    customer_id = resolve_customer(ctx.conn, action)
    at = ctx.event_time()
    ctx.conn.execute(
        sa.text(
            "INSERT INTO customer_activities (customer_id, activity_type, occurred_at, properties, "
            "source, external_id) VALUES (CAST(:cid AS uuid), 'note', :at, CAST(:props AS jsonb), "
            "'manual', :ext) ON CONFLICT DO NOTHING"
        ),
        {
            "cid": customer_id,
            "at": at,
            "ext": f"note:{ctx.delivery.delivery_id}",
            "props": orjson.dumps({"actor": action.actor, "internal_notes": text}).decode(),
        },
    )
    # The notes history (the mirror's notes subcollection), at the time staff wrote it.
    ctx.conn.execute(
        sa.text(
            "INSERT INTO customer_notes (customer_id, kind, body, actor, external_id, created_at) "
            "VALUES (CAST(:cid AS uuid), 'internal_notes', :text, :actor, :ext, :at) "
            "ON CONFLICT DO NOTHING"
        ),
        {
            "cid": customer_id,
            "text": text,
            "actor": action.actor,
            "ext": f"note:{ctx.delivery.delivery_id}",
            "at": at,
        },
    )
    if not staff_version_newer(ctx.conn, customer_id, "internal_notes", at):
        return Outcome("stale", {customer_id})
    ctx.conn.execute(
        sa.text("UPDATE customers SET internal_notes = :text WHERE id = CAST(:cid AS uuid)"),
        {"text": text, "cid": customer_id},
    )
    return Outcome("applied", {customer_id})


def customer_tags(ctx: ApplyContext) -> Outcome:
    """customer.tags: add/remove staff tags (manual_tags), newest action per tag wins."""
    action: CustomerTags = _action(ctx)  # the model refuses an action changing no tag
    add, remove = split_tags(action.add), split_tags(action.remove)
    customer_id = resolve_customer(ctx.conn, action)
    changed = _set_manual_tags(ctx, customer_id, add, remove, ctx.event_time())
    return Outcome("applied" if changed else "stale", {customer_id})


def customer_block(blocked: bool) -> Handler:
    def handler(ctx: ApplyContext) -> Outcome:
        customer_id = resolve_customer(ctx.conn, _action(ctx))
        if not staff_version_newer(ctx.conn, customer_id, "status", ctx.event_time()):
            return Outcome("stale", {customer_id})
        if blocked:
            ctx.conn.execute(
                sa.text(
                    "UPDATE customers SET status = 'blocked', status_set_by = 'manual' "
                    "WHERE id = CAST(:cid AS uuid)"
                ),
                {"cid": customer_id},
            )
        else:
            # hand the status back to the pipelines (VIP rule, Shopify state)
            ctx.conn.execute(
                sa.text(
                    "UPDATE customers SET status = 'active', status_set_by = 'system' "
                    "WHERE id = CAST(:cid AS uuid)"
                ),
                {"cid": customer_id},
            )
            apply_survivorship(ctx.conn, {customer_id})
        return Outcome("applied", {customer_id})

    handler.__doc__ = (
        "customer.block: staff status, pipelines never override it."
        if blocked
        else "customer.unblock: the status is the pipelines' again."
    )
    return handler


def customer_delete(ctx: ApplyContext) -> Outcome:
    """customer.delete: soft delete (the row stays; the mirror removes the document)."""
    customer_id = resolve_customer(ctx.conn, _action(ctx))
    if not staff_version_newer(ctx.conn, customer_id, "deleted", ctx.event_time()):
        return Outcome("stale", {customer_id})
    ctx.conn.execute(
        sa.text(
            "UPDATE customer_sources SET deleted_at = coalesce(deleted_at, now()), "
            "sync_status = 'deleted' WHERE customer_id = CAST(:cid AS uuid) "
            "AND source = 'manual'"
        ),
        {"cid": customer_id},
    )
    done = ctx.conn.execute(
        sa.text(
            "UPDATE customers SET deleted_at = now() WHERE id = CAST(:cid AS uuid) "
            "AND deleted_at IS NULL"
        ),
        {"cid": customer_id},
    ).rowcount
    return Outcome("applied" if done else "duplicate", {customer_id})


def segment_change(add: bool) -> Handler:
    def handler(ctx: ApplyContext) -> Outcome:
        action: SegmentAdd | SegmentRemove = _action(ctx)
        name = action.segment_name
        segment_type = action.segment_type or "custom"
        customer_id = resolve_customer(ctx.conn, action)
        at = ctx.event_time()
        if not staff_version_newer(ctx.conn, customer_id, f"segment:{name}", at):
            return Outcome("stale", {customer_id})
        if add:
            ctx.conn.execute(
                sa.text(
                    """
                    INSERT INTO customer_segments AS s (customer_id, segment_name, segment_type,
                        confidence, assigned_by, assigned_at, expires_at)
                    VALUES (CAST(:cid AS uuid), :name, :type, 1, 'manual', :at, :expires)
                    ON CONFLICT (customer_id, segment_name) DO UPDATE SET
                        segment_type = excluded.segment_type, confidence = 1,
                        assigned_by = 'manual', assigned_at = excluded.assigned_at,
                        expires_at = excluded.expires_at
                    """
                ),
                {
                    "cid": customer_id,
                    "name": name,
                    "type": segment_type,
                    "at": at,
                    "expires": parse_timestamp(getattr(action, "expires_at", None)),
                },
            )
        else:
            ctx.conn.execute(
                sa.text(
                    "DELETE FROM customer_segments WHERE customer_id = CAST(:cid AS uuid) "
                    "AND segment_name = :name"
                ),
                {"cid": customer_id, "name": name},
            )
        return Outcome("applied", {customer_id})

    handler.__doc__ = f"segment.{'add' if add else 'remove'}: manual segment membership."
    return handler


def activity_record(ctx: ApplyContext) -> Outcome:
    """activity.record: an activity staff logged (idempotent on activity_id / action id)."""
    action: ActivityRecord = _action(ctx)
    customer_id = resolve_customer(ctx.conn, action)
    at = parse_timestamp(action.activity_at) or ctx.event_time()
    inserted = ctx.conn.execute(
        sa.text(
            "INSERT INTO customer_activities (customer_id, activity_type, occurred_at, session_id, "
            "utm_source, utm_medium, utm_campaign, properties, source, external_id) "
            "VALUES (CAST(:cid AS uuid), :type, :at, :session, :us, :um, :uc, "
            "CAST(:props AS jsonb), 'manual', :ext) ON CONFLICT DO NOTHING RETURNING 1"
        ),
        {
            "cid": customer_id,
            "type": action.activity_type,
            "at": at,
            "session": action.session_id,
            "us": action.utm_source,
            "um": action.utm_medium,
            "uc": action.utm_campaign,
            "props": orjson.dumps(action.properties or {}, default=str).decode(),
            "ext": action.activity_id or ctx.delivery.delivery_id,
        },
    ).scalar_one_or_none()
    if inserted is None:
        return Outcome("duplicate", {customer_id})
    bump_last_active(ctx.conn, {(customer_id, at)})
    return Outcome("applied", {customer_id})


ADMIN_HANDLERS: dict[str, Handler] = {
    "customer.create": customer_upsert,
    "customer.update": customer_upsert,
    "customer.note": customer_note,
    "customer.tags": customer_tags,
    "customer.block": customer_block(True),
    "customer.unblock": customer_block(False),
    "customer.delete": customer_delete,
    "segment.add": segment_change(True),
    "segment.remove": segment_change(False),
    "activity.record": activity_record,
}
