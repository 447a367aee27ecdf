"""Shopify REST shapes (API 2024-10 customers/orders, as pulled, in webhooks and in the store)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from crm_pipeline.mapping.records import (
    AddressRecord,
    CustomerRecord,
    LineItemRecord,
    OrderRecord,
)
from crm_pipeline.normalize import normalize_email, normalize_phone, parse_timestamp, split_tags
from crm_pipeline.sources.shopify import customer_to_rest

_FINANCIAL = {
    "pending",
    "authorized",
    "partially_paid",
    "paid",
    "partially_refunded",
    "refunded",
    "voided",
    "expired",
}
_FULFILLMENT = {"fulfilled", "partial", "unfulfilled", "restocked", "scheduled", "on_hold"}


def _str_id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = str(value)
    # GraphQL ids (gid://shopify/Customer/123) and REST ids map to the same key
    return text.rsplit("/", 1)[-1]


def money(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value)).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        return None


def _consent(block: Any) -> tuple[bool | None, Any]:
    if not isinstance(block, dict):
        return None, None
    state = (block.get("state") or "").lower()
    if not state:
        return None, None
    return state == "subscribed", parse_timestamp(block.get("consent_updated_at"))


def map_address(raw: dict[str, Any], fallback_id: str) -> AddressRecord:
    return AddressRecord(
        external_id=_str_id(raw.get("id")) or fallback_id,
        is_default=bool(raw.get("default")),
        first_name=raw.get("first_name"),
        last_name=raw.get("last_name"),
        company=raw.get("company"),
        address1=raw.get("address1"),
        address2=raw.get("address2"),
        city=raw.get("city"),
        province=raw.get("province"),
        province_code=raw.get("province_code"),
        country=raw.get("country") or raw.get("country_name"),
        country_code=(raw.get("country_code") or None) and str(raw["country_code"]).upper(),
        zip=raw.get("zip"),
        phone=raw.get("phone"),
        latitude=raw.get("latitude"),
        longitude=raw.get("longitude"),
    )


def map_customer(raw: dict[str, Any], source: str = "shopify") -> CustomerRecord:
    external_id = _str_id(raw.get("id"))
    addresses = [
        map_address(a, f"{external_id}:{i}") for i, a in enumerate(raw.get("addresses") or [])
    ]
    default = raw.get("default_address")
    if isinstance(default, dict):
        default_id = _str_id(default.get("id"))
        if not any(a.external_id == default_id for a in addresses):
            addresses.append(map_address(default, f"{external_id}:default"))
        for a in addresses:
            a.is_default = a.external_id == default_id
    region = next((a.country_code for a in addresses if a.is_default and a.country_code), None)
    accepts_email, email_consent_at = _consent(raw.get("email_marketing_consent"))
    if accepts_email is None and "accepts_marketing" in raw:  # pre-2022 payloads
        accepts_email = bool(raw.get("accepts_marketing"))
    accepts_sms, _ = _consent(raw.get("sms_marketing_consent"))
    attributes: dict[str, Any] = {}
    for key in ("verified_email", "tax_exempt", "currency", "orders_count", "total_spent"):
        if raw.get(key) is not None:
            attributes[key] = raw[key]
    return CustomerRecord(
        source=source,
        external_id=external_id,
        source_updated_at=parse_timestamp(raw.get("updated_at")),
        raw_email=raw.get("email"),
        email=normalize_email(raw.get("email")),
        phone=raw.get("phone"),
        phone_normalized=normalize_phone(raw.get("phone"), region),
        first_name=(raw.get("first_name") or None),
        last_name=(raw.get("last_name") or None),
        tags=split_tags(raw.get("tags")),
        note=raw.get("note") or None,
        state=raw.get("state"),
        accepts_email_marketing=accepts_email,
        email_consent_at=email_consent_at,
        accepts_sms_marketing=accepts_sms,
        created_at=parse_timestamp(raw.get("created_at")),
        attributes={"shopify": attributes} if attributes else {},
        addresses=addresses,
        raw=raw,
    )


def map_bulk_customer_line(line: bytes) -> CustomerRecord | None:
    """One line of a customers bulk-operation result (GraphQL JSONL) as a record; child lines
    (`__parentId`, none with our query) are skipped. Module-level: workers import it by name."""
    node = orjson.loads(line)
    if "__parentId" in node:
        return None
    return map_customer(customer_to_rest(node))


def map_order(raw: dict[str, Any]) -> OrderRecord:
    external_id = _str_id(raw.get("id"))
    customer = raw.get("customer") if isinstance(raw.get("customer"), dict) else {}
    refunded_by_item: dict[str, int] = {}
    total_refunded = Decimal("0")
    for refund in raw.get("refunds") or []:
        for tx in refund.get("transactions") or []:
            if (tx.get("kind") or "refund") == "refund" and tx.get(
                "status", "success"
            ) == "success":
                total_refunded += money(tx.get("amount")) or Decimal("0")
        for rli in refund.get("refund_line_items") or []:
            key = _str_id(rli.get("line_item_id"))
            if key:
                refunded_by_item[key] = refunded_by_item.get(key, 0) + int(rli.get("quantity") or 0)
    items = []
    for i, li in enumerate(raw.get("line_items") or []):
        item_id = _str_id(li.get("id")) or f"{external_id}:{i}"
        items.append(
            LineItemRecord(
                external_id=item_id,
                product_id=_str_id(li.get("product_id")),
                title=li.get("title"),
                vendor=li.get("vendor") or None,
                product_type=li.get("product_type") or None,
                quantity=int(li.get("quantity") or 0),
                price=money(li.get("price")) or Decimal("0"),
                refunded_quantity=refunded_by_item.get(item_id, 0),
            )
        )
    financial = (raw.get("financial_status") or "").lower() or None
    fulfillment = (raw.get("fulfillment_status") or "").lower() or None
    return OrderRecord(
        source="shopify",
        external_id=external_id,
        customer_external_id=_str_id(customer.get("id")) if customer else None,
        email=normalize_email(raw.get("email") or (customer or {}).get("email")),
        created_at=parse_timestamp(raw.get("created_at")),
        source_updated_at=parse_timestamp(raw.get("updated_at") or raw.get("created_at")),
        cancelled_at=parse_timestamp(raw.get("cancelled_at")),
        financial_status=financial if financial in _FINANCIAL or financial is None else "unknown",
        fulfillment_status=fulfillment if fulfillment in _FULFILLMENT else None,
        total_price=money(raw.get("total_price")),
        total_refunded=total_refunded,
        currency=raw.get("currency"),
        line_items=items,
        raw=raw,
    )
