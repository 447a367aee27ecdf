"""GDPR webhooks: customers/redact erases a person everywhere; customers/data_request exports them.

Redaction keeps only what proves the erasure: the customer row's id with redacted_at, sha256
tombstones of the identities (so a later pull or webhook of the same person is refused, see
CustomerLoader), order amounts without the email, and a gdpr_requests row with counts. The
Firestore document goes on the mirror's next run (it deletes redacted customers).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.ingest.customers import identity_hash
from crm_pipeline.normalize import normalize_email, normalize_phone
from crm_pipeline.settings import exports_dir
from crm_pipeline.webhooks.context import ApplyContext, Outcome, PermanentError
from crm_pipeline.webhooks.topics import shopify_id

REDACTED_MARKER = {"redacted": True}


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
        (identity_hash(kind, value), kind)
        for kind in ("email", "phone", "shopify_id", "klaviyo_id")
        for value in sorted(found[kind])
    ]
    if tombstones:
        conn.execute(
            sa.text(
                "INSERT INTO redaction_tombstones (identity_hash, kind, customer_id) "
                "SELECT h, k, CAST(:cid AS uuid) FROM unnest(CAST(:h AS text[]), "
                "CAST(:k AS text[])) AS t(h, k) ON CONFLICT (identity_hash) DO NOTHING"
            ),
            {
                "h": [t[0] for t in tombstones],
                "k": [t[1] for t in tombstones],
                "cid": ids[0] if ids else None,
            },
        )
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

    needles = sorted(found["email"] | found["phone"] | found["phone_raw"])
    subjects = sorted(
        {f"shopify:{i}" for i in found["shopify_id"]}
        | {f"klaviyo:{i}" for i in found["klaviyo_id"]}
        | {f"manual:{i}" for i in found["manual_id"]}
        | {f"crm:{i}" for i in ids}
    )
    stamp = datetime.now(UTC).isoformat()
    marker = orjson.dumps({**REDACTED_MARKER, "redacted_at": stamp}).decode()
    counts["webhook_events"] = conn.execute(
        sa.text(
            """
            UPDATE webhook_events SET payload = CAST(:marker AS jsonb), headers = '{}'::jsonb,
                last_error = NULL
            WHERE (id = :delivery
                   OR subject_key = ANY(:subjects)
                   OR regexp_replace(subject_key, '^shopify:.*/', 'shopify:') = ANY(:subjects)
                   OR EXISTS (SELECT 1 FROM unnest(CAST(:needles AS text[])) n
                              WHERE strpos(lower(payload::text), lower(n)) > 0))
              AND NOT payload @> '{"redacted": true}'::jsonb
            """
        ),
        {"marker": marker, "delivery": delivery_id, "subjects": subjects, "needles": needles},
    ).rowcount
    counts["quarantined_records"] = conn.execute(
        sa.text(
            """
            UPDATE quarantined_records SET record = CAST(:marker AS jsonb), external_id = NULL,
                resolved_at = coalesce(resolved_at, now())
            WHERE (external_id = ANY(:ext_ids)
                   OR EXISTS (SELECT 1 FROM unnest(CAST(:needles AS text[])) n
                              WHERE strpos(lower(record::text), lower(n)) > 0))
              AND NOT record @> '{"redacted": true}'::jsonb
            """
        ),
        {
            "marker": marker,
            "needles": needles,
            "ext_ids": sorted(found["shopify_id"] | found["klaviyo_id"] | found["manual_id"]),
        },
    ).rowcount
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
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"data_request-{_safe(ctx.delivery.shop_domain)}-{_safe(request_ref)}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)
    ctx.conn.execute(
        sa.text(
            "INSERT INTO gdpr_requests (kind, webhook_event_id, shop_domain, customer_id, "
            "request_ref, requested_at, export_path, details) VALUES ('data_request', :delivery, "
            ":shop, CAST(:cid AS uuid), :ref, :at, :path, CAST(:details AS jsonb)) "
            "ON CONFLICT (kind, webhook_event_id) DO UPDATE SET export_path = excluded.export_path,"
            " completed_at = now(), details = excluded.details"
        ),
        {
            "delivery": ctx.delivery.id,
            "shop": ctx.delivery.shop_domain,
            "cid": ids[0] if ids else None,
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


def _safe(text: str | None) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in (text or "shop"))[:100]


GDPR_HANDLERS = {
    "customers/redact": customers_redact,
    "customers/data_request": customers_data_request,
}
