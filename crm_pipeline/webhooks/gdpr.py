"""GDPR webhooks: customers/redact erases a person everywhere; customers/data_request exports them.

Redaction keeps only what proves the erasure: the customer row's id with redacted_at, keyed
tombstones of the identities (so a later pull or webhook of the same person is refused, see
ingest/tombstones.py), order amounts without the email, and a gdpr_requests row with counts.
Data-request exports of the person are deleted. Every row it touches is found by key (customer
id, subject key, identity hash), never by scanning text, so the delivery's transaction stays
short on a large queue. The Firestore document goes on the mirror's next run (it deletes
redacted customers).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.ingest.tombstones import identity_keys, tombstone_key, write_tombstones
from crm_pipeline.normalize import normalize_email, normalize_phone
from crm_pipeline.settings import exports_dir
from crm_pipeline.webhooks.context import ApplyContext, Outcome, PermanentError
from crm_pipeline.webhooks.topics import shopify_id

REDACTED_MARKER = {"redacted": True}

# The person's deliveries, by their own id (the redact delivery) or the subject they are about
# (primary key and webhook_events_subject_idx: no scan of payloads).
WEBHOOK_SCRUB_SQL = """
UPDATE webhook_events SET payload = CAST(:marker AS jsonb), headers = '{}'::jsonb,
    last_error = NULL
WHERE (id = :delivery OR subject_key = ANY(CAST(:subjects AS text[])))
  AND NOT payload @> '{"redacted": true}'::jsonb
"""
# The person's quarantined records, by source id or by the keyed hashes of the emails and
# phones they mention (quarantined_records_external_idx, quarantined_records_identity_idx).
QUARANTINE_SCRUB_SQL = """
UPDATE quarantined_records SET record = CAST(:marker AS jsonb), external_id = NULL,
    identity_keys = '{}', resolved_at = coalesce(resolved_at, now())
WHERE (external_id = ANY(CAST(:ext_ids AS text[]))
       OR identity_keys && CAST(:keys AS text[]))
  AND NOT record @> '{"redacted": true}'::jsonb
"""


def _person(payload: Any) -> tuple[str | None, str | None, str | None]:
    if not isinstance(payload, dict) or not isinstance(payload.get("customer"), dict):
        raise PermanentError("GDPR payload without a customer object")
    customer = payload["customer"]
    return shopify_id(customer.get("id")), customer.get("email"), customer.get("phone")


def find_customers(
    conn: sa.Connection, shopify_customer_id: str | None, email: str | None, phone: str | None
) -> list[str]:
    """Every customer row holding this person: by Shopify id, email or phone, and merged ones."""
    rows = (
        conn.execute(
            sa.text(
                """
            WITH direct AS (
                SELECT s.customer_id AS id FROM customer_sources s
                WHERE s.source = 'shopify' AND s.external_id = :sid
                UNION SELECT id FROM customers WHERE email_lowercase = :email
                UNION SELECT id FROM customers WHERE phone_normalized = :phone
            )
            SELECT id::text FROM direct
            UNION SELECT c.id::text FROM customers c JOIN direct d ON c.merged_into = d.id
            """
            ),
            {
                "sid": shopify_customer_id,
                "email": normalize_email(email),
                "phone": normalize_phone(phone) if phone else None,
            },
        )
        .scalars()
        .all()
    )
    return sorted(set(rows))


def _identities(conn: sa.Connection, ids: list[str]) -> dict[str, set[str]]:
    """Every email, phone and source id these customers are known by (before erasing them)."""
    found: dict[str, set[str]] = {
        "email": set(),
        "phone": set(),
        "phone_raw": set(),
        "shopify_id": set(),
        "klaviyo_id": set(),
        "manual_id": set(),
    }
    for row in conn.execute(
        sa.text(
            "SELECT email_lowercase, phone, phone_normalized FROM customers "
            "WHERE id = ANY(CAST(:ids AS uuid[]))"
        ),
        {"ids": ids},
    ):
        _add(found, row.email_lowercase, row.phone, row.phone_normalized)
    for row in conn.execute(
        sa.text(
            "SELECT source, external_id, profile ->> 'email' AS email, "
            "profile ->> 'phone' AS phone,"
            " profile ->> 'phone_normalized' AS phone_normalized FROM customer_sources "
            "WHERE customer_id = ANY(CAST(:ids AS uuid[]))"
        ),
        {"ids": ids},
    ):
        _add(found, row.email, row.phone, row.phone_normalized)
        found[f"{row.source}_id"].add(row.external_id)
    for row in conn.execute(
        sa.text(
            "SELECT phone FROM customer_addresses WHERE customer_id = ANY(CAST(:ids AS uuid[]))"
            " AND phone IS NOT NULL"
        ),
        {"ids": ids},
    ):
        _add(found, None, row.phone, normalize_phone(row.phone))
    return found


def _add(
    found: dict[str, set[str]], email: str | None, phone: str | None, phone_normalized: str | None
) -> None:
    if email:
        found["email"].add(normalize_email(email) or email)
    if phone:
        found["phone_raw"].add(phone)
    if phone_normalized:
        found["phone"].add(phone_normalized)


def redact_person(
    conn: sa.Connection,
    *,
    shopify_customer_id: str | None,
    email: str | None,
    phone: str | None,
    orders_to_redact: list[str] | None = None,
    delivery_id: int | None = None,
    shop_domain: str | None = None,
) -> dict[str, Any]:
    """Erase one person's PII from every table; returns counts (no PII) for the proof row."""
    ids = find_customers(conn, shopify_customer_id, email, phone)
    found = _identities(conn, ids)
    _add(found, email, phone, normalize_phone(phone) if phone else None)
    if shopify_customer_id:
        found["shopify_id"].add(shopify_customer_id)
    found["email"].discard("")
    counts: dict[str, Any] = {"customers": len(ids)}

    tombstones = [
        (kind, value)
        for kind in ("email", "phone", "shopify_id", "klaviyo_id")
        for value in sorted(found[kind])
    ]
    write_tombstones(conn, tombstones, ids[0] if ids else None)
    counts["tombstones"] = len(tombstones)
    params = {"ids": ids}
    if ids:
        counts["addresses"] = conn.execute(
            sa.text("DELETE FROM customer_addresses WHERE customer_id = ANY(CAST(:ids AS uuid[]))"),
            params,
        ).rowcount
        conn.execute(
            sa.text(
                """
                UPDATE customer_sources SET source_data = '{}'::jsonb, profile = '{}'::jsonb,
                    webhook_state = '{}'::jsonb, content_hash = NULL, sync_status = 'redacted',
                    deleted_at = coalesce(deleted_at, now()),
                    external_id = 'redacted:' || md5(source || ':' || external_id)
                WHERE customer_id = ANY(CAST(:ids AS uuid[]))
                  AND external_id NOT LIKE 'redacted:%'
                """
            ),
            params,
        )
        conn.execute(
            sa.text(
                """
                UPDATE customers SET email = NULL, phone = NULL, phone_normalized = NULL,
                    first_name = NULL, last_name = NULL, notes = NULL, internal_notes = NULL,
                    tags = '{}', manual_tags = '{}', custom_attributes = '{}'::jsonb,
                    redacted_at = coalesce(redacted_at, now()),
                    deleted_at = coalesce(deleted_at, now())
                WHERE id = ANY(CAST(:ids AS uuid[]))
                """
            ),
            params,
        )
        counts["activities"] = conn.execute(
            sa.text(
                "UPDATE customer_activities SET properties = '{}'::jsonb, ip_address = NULL, "
                "user_agent = NULL, session_id = NULL WHERE customer_id = ANY(CAST(:ids AS uuid[]))"
            ),
            params,
        ).rowcount
        conn.execute(
            sa.text(
                "UPDATE customer_sync_logs SET data_snapshot = NULL, error_message = NULL "
                "WHERE customer_id = ANY(CAST(:ids AS uuid[]))"
            ),
            params,
        )
        conn.execute(
            sa.text(
                "DELETE FROM staff_field_versions WHERE customer_id = ANY(CAST(:ids AS uuid[]))"
            ),
            params,
        )
        # Every version of the notes: the erased text must not survive in the history.
        conn.execute(
            sa.text("DELETE FROM customer_notes WHERE customer_id = ANY(CAST(:ids AS uuid[]))"),
            params,
        )
    counts["orders"] = conn.execute(
        sa.text(
            "UPDATE orders SET email = NULL WHERE customer_id = ANY(CAST(:ids AS uuid[])) "
            "OR (source = 'shopify' AND external_id = ANY(:orders)) OR email = ANY(:emails)"
        ),
        {
            "ids": ids,
            "orders": [str(o) for o in orders_to_redact or []],
            "emails": sorted(found["email"]),
        },
    ).rowcount

    subjects = sorted(
        {f"shopify:{i}" for i in found["shopify_id"]}
        | {f"shopify:gid://shopify/Customer/{i}" for i in found["shopify_id"]}
        | {f"klaviyo:{i}" for i in found["klaviyo_id"]}
        | {f"manual:{i}" for i in found["manual_id"]}
        | {f"crm:{i}" for i in ids}
    )
    stamp = datetime.now(UTC).isoformat()
    marker = orjson.dumps({**REDACTED_MARKER, "redacted_at": stamp}).decode()
    counts["webhook_events"] = conn.execute(
        sa.text(WEBHOOK_SCRUB_SQL),
        {"marker": marker, "delivery": delivery_id, "subjects": subjects},
    ).rowcount
    person = [("email", e) for e in found["email"]] + [("phone", p) for p in found["phone"]]
    counts["quarantined_records"] = conn.execute(
        sa.text(QUARANTINE_SCRUB_SQL),
        {
            "marker": marker,
            "keys": identity_keys(tombstone_key(conn), person),
            "ext_ids": sorted(found["shopify_id"] | found["klaviyo_id"] | found["manual_id"]),
        },
    ).rowcount
    counts["exports_deleted"] = delete_exports(conn, ids)
    conn.execute(
        sa.text(
            "INSERT INTO gdpr_requests (kind, webhook_event_id, shop_domain, customer_id, "
            "requested_at, details) VALUES ('redact', :delivery, :shop, CAST(:cid AS uuid), "
            "now(), CAST(:details AS jsonb)) ON CONFLICT (kind, webhook_event_id) DO NOTHING"
        ),
        {
            "delivery": delivery_id,
            "shop": shop_domain,
            "cid": ids[0] if ids else None,
            "details": orjson.dumps({**counts, "customer_ids": ids}).decode(),
        },
    )
    counts["customer_ids"] = ids
    return counts


def customers_redact(ctx: ApplyContext) -> Outcome:
    """customers/redact (Shopify's mandatory GDPR webhook)."""
    payload = ctx.payload
    sid, email, phone = _person(payload)
    orders = [shopify_id(o) for o in payload.get("orders_to_redact") or []]
    counts = redact_person(
        ctx.conn,
        shopify_customer_id=sid,
        email=email,
        phone=phone,
        orders_to_redact=[o for o in orders if o],
        delivery_id=ctx.delivery.id,
        shop_domain=ctx.delivery.shop_domain,
    )
    ctx.delivery.payload = REDACTED_MARKER
    return Outcome("applied", set(counts["customer_ids"]))


def _rows(conn: sa.Connection, query: str, **params: Any) -> list[Any]:
    return list(conn.execute(sa.text(query), params).scalars())


def export_person(
    conn: sa.Connection, ids: list[str], orders_requested: list[str]
) -> dict[str, Any]:
    """Everything held about these customers, as JSON-able data."""
    people = []
    for cid in ids:
        params = {"cid": cid}
        people.append(
            {
                "customer": _rows(
                    conn,
                    "SELECT to_jsonb(c) FROM customers c WHERE id = CAST(:cid AS uuid)",
                    **params,
                )[0],
                "sources": _rows(
                    conn,
                    "SELECT to_jsonb(s) - 'content_hash' FROM customer_sources s "
                    "WHERE customer_id = CAST(:cid AS uuid) ORDER BY id",
                    **params,
                ),
                "addresses": _rows(
                    conn,
                    "SELECT to_jsonb(a) FROM customer_addresses a "
                    "WHERE customer_id = CAST(:cid AS uuid) ORDER BY id",
                    **params,
                ),
                "orders": _rows(
                    conn,
                    "SELECT to_jsonb(o) - 'content_hash' || jsonb_build_object('line_items', "
                    "(SELECT coalesce(jsonb_agg(to_jsonb(li) ORDER BY li.id), '[]') "
                    "FROM order_line_items li WHERE li.order_id = o.id)) FROM orders o "
                    "WHERE customer_id = CAST(:cid AS uuid) ORDER BY created_at",
                    **params,
                ),
                "activities": _rows(
                    conn,
                    "SELECT to_jsonb(a) FROM customer_activities a "
                    "WHERE customer_id = CAST(:cid AS uuid) ORDER BY occurred_at",
                    **params,
                ),
                "segments": _rows(
                    conn,
                    "SELECT to_jsonb(s) FROM customer_segments s "
                    "WHERE customer_id = CAST(:cid AS uuid) ORDER BY segment_name",
                    **params,
                ),
                "metrics": (
                    _rows(
                        conn,
                        "SELECT to_jsonb(m) FROM customer_metrics m "
                        "WHERE customer_id = CAST(:cid AS uuid)",
                        **params,
                    )
                    or [None]
                )[0],
            }
        )
    extra_orders = _rows(
        conn,
        "SELECT to_jsonb(o) - 'content_hash' FROM orders o WHERE source = 'shopify' "
        "AND external_id = ANY(:ext) AND (customer_id IS NULL OR "
        "customer_id <> ALL(CAST(:ids AS uuid[])))",
        ext=orders_requested,
        ids=ids,
    )
    return {"customers": people, "orders_requested": extra_orders}


def customers_data_request(ctx: ApplyContext) -> Outcome:
    """customers/data_request: write a JSON export of the person and record where it is."""
    payload = ctx.payload
    sid, email, phone = _person(payload)
    ids = [
        cid
        for cid in find_customers(ctx.conn, sid, email, phone)
        if ctx.conn.execute(
            sa.text("SELECT redacted_at IS NULL FROM customers WHERE id = CAST(:id AS uuid)"),
            {"id": cid},
        ).scalar_one()
    ]
    orders = [o for o in (shopify_id(x) for x in payload.get("orders_requested") or []) if o]
    request_ref = shopify_id((payload.get("data_request") or {}).get("id")) or str(ctx.delivery.id)
    data = {
        "request": {
            "kind": "data_request",
            "shop_domain": ctx.delivery.shop_domain,
            "data_request_id": request_ref,
            "webhook_event_id": ctx.delivery.id,
            "generated_at": datetime.now(UTC).isoformat(),
        },
        **export_person(ctx.conn, ids, orders),
    }
    folder = Path(ctx.exports_dir or exports_dir()) / "gdpr"
    path = folder / f"data_request-{_safe(ctx.delivery.shop_domain)}-{_safe(request_ref)}.json"
    write_private(path, orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2))
    ctx.conn.execute(
        sa.text(
            "INSERT INTO gdpr_requests (kind, webhook_event_id, shop_domain, customer_id, "
            "customer_ids, request_ref, requested_at, export_path, details) VALUES "
            "('data_request', :delivery, :shop, CAST(:cid AS uuid), CAST(:ids AS uuid[]), :ref, "
            ":at, :path, CAST(:details AS jsonb)) "
            "ON CONFLICT (kind, webhook_event_id) DO UPDATE SET "
            "export_path = excluded.export_path, customer_ids = excluded.customer_ids, "
            "completed_at = now(), details = excluded.details"
        ),
        {
            "delivery": ctx.delivery.id,
            "shop": ctx.delivery.shop_domain,
            "cid": ids[0] if ids else None,
            "ids": ids,
            "ref": request_ref,
            "at": ctx.event_time(),
            "path": str(path),
            "details": orjson.dumps(
                {
                    "customers": len(ids),
                    "orders": sum(len(p["orders"]) for p in data["customers"])
                    + len(data["orders_requested"]),
                }
            ).decode(),
        },
    )
    return Outcome("applied" if ids else "no_data")


def write_private(path: Path, data: bytes) -> None:
    """Write an export only its owner can read: the file 0600 in a 0700 folder, atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)  # mkdir's mode is filtered by the umask and skips old folders
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def delete_exports(conn: sa.Connection, customer_ids: list[str]) -> int:
    """Delete the data-request exports holding any of these customers; returns files removed.

    The file goes at once (not at commit): should the redaction roll back, its retry deletes
    nothing more than was due anyway.
    """
    if not customer_ids:
        return 0
    rows = conn.execute(
        sa.text(
            """
            UPDATE gdpr_requests g SET export_path = NULL,
                details = g.details || jsonb_build_object('export_deleted_at', now())
            FROM (SELECT id, export_path FROM gdpr_requests
                  WHERE kind = 'data_request' AND export_path IS NOT NULL
                    AND (customer_ids && CAST(:ids AS uuid[])
                         OR customer_id = ANY(CAST(:ids AS uuid[])))
                  FOR UPDATE) old
            WHERE g.id = old.id
            RETURNING old.export_path
            """
        ),
        {"ids": customer_ids},
    ).scalars()
    removed = 0
    for stored in rows:
        path = Path(stored)
        # only our own export files, whatever the column holds
        if path.name.startswith("data_request-") and path.suffix == ".json":
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def _safe(text: str | None) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in (text or "shop"))[:100]


GDPR_HANDLERS = {
    "customers/redact": customers_redact,
    "customers/data_request": customers_data_request,
}
