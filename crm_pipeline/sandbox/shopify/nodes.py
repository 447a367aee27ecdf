"""Store records (Shopify's REST shape, docs/reference.md section 5) as GraphQL Admin API nodes.

One mapping serves paginated answers (executed by graphql-core, which picks the selected
fields) and bulk result lines (rendered straight to JSONL, then cut to the selection).
"""

from __future__ import annotations

import functools
from decimal import Decimal, InvalidOperation
from typing import Any

from crm_pipeline.sandbox.store_index import iso_utc


def _int(value: Any) -> Any:
    """An int when it is one; otherwise the dirty value itself, for validation downstream."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return value


def gid(kind: str, value: Any, model: str | None = None) -> str | None:
    if value is None:
        return None
    suffix = f"?model_name={model}" if model else ""
    return f"gid://shopify/{kind}/{value}{suffix}"


@functools.lru_cache(maxsize=1024)
def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _upper(value: Any) -> str | None:
    return str(value).upper() if value not in (None, "") else None


def _money(value: Any) -> str:
    if value in (None, ""):
        return "0.0"
    try:
        return str(Decimal(str(value)))
    except InvalidOperation:
        return str(value)


def _tags(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(t) for t in value]
    return [t.strip() for t in str(value or "").split(",") if t.strip()]


def _consent(value: dict | None, sms: bool = False) -> dict | None:
    if not value:
        return None
    node = {
        "marketingState": _upper(value.get("state")),
        "marketingOptInLevel": _upper(value.get("opt_in_level")),
        "consentUpdatedAt": iso_utc(value.get("consent_updated_at")),
    }
    if sms:
        node["consentCollectedFrom"] = _upper(value.get("consent_collected_from"))
    return node


def _address(addr: dict | None) -> dict | None:
    if not addr:
        return None
    node: dict[str, Any] = {}
    for key, value in addr.items():
        if key in ("customer_id", "default"):
            continue  # derivable from the parent customer and its defaultAddress
        if key == "id":
            node["id"] = gid("MailingAddress", value, "CustomerAddress")
        elif key == "country_code":
            node["countryCodeV2"] = value
        else:
            node[_camel(key)] = value
    return node


def customer_node(c: dict) -> dict:
    """A REST customer line as the GraphQL `Customer` our queries select."""
    currency = c.get("currency") or "USD"
    return {
        "id": gid("Customer", c["id"]),
        "legacyResourceId": str(c["id"]),
        "email": c.get("email"),
        "firstName": c.get("first_name"),
        "lastName": c.get("last_name"),
        "phone": c.get("phone"),
        "state": _upper(c.get("state")) or "DISABLED",
        "tags": _tags(c.get("tags")),
        "note": c.get("note"),
        "verifiedEmail": bool(c.get("verified_email")),
        "taxExempt": bool(c.get("tax_exempt")),
        "emailMarketingConsent": _consent(c.get("email_marketing_consent")),
        "smsMarketingConsent": _consent(c.get("sms_marketing_consent"), sms=True),
        "addresses": [_address(a) for a in c.get("addresses") or []],
        "defaultAddress": _address(c.get("default_address")),
        "createdAt": iso_utc(c.get("created_at")),
        "updatedAt": iso_utc(c.get("updated_at")),
        "numberOfOrders": str(c.get("orders_count") or 0),
        "multipassIdentifier": c.get("multipass_identifier"),
        "taxExemptions": [_upper(t) for t in c.get("tax_exemptions") or []],
        "lastOrder": {"id": gid("Order", c["last_order_id"])} if c.get("last_order_id") else None,
        "amountSpent": {"amount": _money(c.get("total_spent")), "currencyCode": currency},
    }


def _camel_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel(k): _camel_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel_tree(v) for v in value]
    return value


def journey_node(journey: dict | None) -> dict | None:
    """The store's `customer_journey_summary` (snake case) as `CustomerJourneySummary`: visit
    and marketing event ids as global ids, times in Shopify's UTC form."""
    if not journey:
        return None
    node: dict = _camel_tree(journey)
    node["ready"] = bool(node.get("ready"))
    for key in ("firstVisit", "lastVisit"):
        visit = node.get(key)
        if not visit:
            continue
        visit["id"] = gid("CustomerVisit", visit.get("id"))
        visit["occurredAt"] = iso_utc(visit.get("occurredAt"))
        event = visit.get("marketingEvent")
        if event:
            event["id"] = gid("MarketingEvent", event.get("id"))
    return node


_FULFILLMENT = {None: "UNFULFILLED", "": "UNFULFILLED", "partial": "PARTIALLY_FULFILLED"}


def _line_item_id(order_id: int, index: int, li: dict) -> int:
    return int(li["id"]) if li.get("id") is not None else int(order_id) * 1000 + index + 1


def order_parts(o: dict) -> tuple[dict, list[dict], list[tuple[str, list[dict]]]]:
    """A REST order as (Order node, LineItem nodes, [(refund gid, RefundLineItem nodes)]).

    Line items and refund line items are connections, so they are separate lines in bulk
    results and `{nodes: [...]}` in paginated ones; refunds are a plain list on Order.
    """
    oid = int(o["id"])
    currency = o.get("currency") or "USD"

    def money(amount: Any) -> dict:
        return {"shopMoney": {"amount": _money(amount), "currencyCode": currency}}

    items = []
    for i, li in enumerate(o.get("line_items") or []):
        pid = li.get("product_id")
        items.append(
            {
                "id": gid("LineItem", _line_item_id(oid, i, li)),
                "title": li.get("title"),
                "vendor": li.get("vendor"),
                "quantity": _int(li.get("quantity")),
                "sku": li.get("sku"),
                "product": (
                    {"id": gid("Product", pid), "productType": li.get("product_type")}
                    if pid is not None
                    else None
                ),
                "originalUnitPriceSet": money(li.get("price")),
            }
        )
    refunds, refund_children = [], []
    for i, r in enumerate(o.get("refunds") or []):
        rid = gid("Refund", r.get("id") if r.get("id") is not None else oid * 100 + i + 1)
        total = Decimal(0)
        for t in r.get("transactions") or []:
            if (t.get("kind") or "refund") == "refund" and t.get("status", "success") == "success":
                try:
                    total += Decimal(str(t.get("amount") or 0))
                except InvalidOperation:
                    pass  # a dirty amount counts as nothing refunded
        refunds.append(
            {
                "id": rid,
                "createdAt": iso_utc(r.get("created_at")),
                "note": r.get("note"),
                "totalRefundedSet": money(total),
            }
        )
        refund_children.append(
            (
                rid,
                [
                    {
                        "lineItem": {"id": gid("LineItem", rli.get("line_item_id"))},
                        "quantity": _int(rli.get("quantity")),
                    }
                    for rli in r.get("refund_line_items") or []
                ],
            )
        )
    customer = o.get("customer") or {}
    fulfillment = o.get("fulfillment_status")
    node = {
        "id": gid("Order", oid),
        "legacyResourceId": str(oid),
        "name": o.get("name") or f"#{o.get('order_number') or oid}",
        "customer": {"id": gid("Customer", customer["id"])} if customer.get("id") else None,
        "email": o.get("email"),
        "createdAt": iso_utc(o.get("created_at")),
        "updatedAt": iso_utc(o.get("updated_at")),
        "processedAt": iso_utc(o.get("processed_at") or o.get("created_at")),
        "cancelledAt": iso_utc(o.get("cancelled_at")),
        "cancelReason": _upper(o.get("cancel_reason")),
        "displayFinancialStatus": _upper(o.get("financial_status")),
        "displayFulfillmentStatus": _FULFILLMENT.get(fulfillment) or _upper(fulfillment),
        "currencyCode": currency,
        "totalPriceSet": money(o.get("total_price")),
        "subtotalPriceSet": money(o.get("subtotal_price")),
        "totalTaxSet": money(o.get("total_tax")),
        "sourceName": o.get("source_name"),
        "customerJourneySummary": journey_node(o.get("customer_journey_summary")),
        "tags": _tags(o.get("tags")),
        "refunds": refunds,
    }
    return node, items, refund_children


class InvalidId(ValueError):
    """Not a Shopify global id."""


def parse_gid(value: Any) -> tuple[str, int]:
    """`gid://shopify/Order/12?model_name=X` -> ("Order", 12)."""
    head, _, rest = str(value).partition("gid://shopify/")
    kind, _, number = rest.split("?", 1)[0].partition("/")
    if head or not kind or not number.isdigit():
        raise InvalidId(f"Invalid global id '{value}'")
    return kind, int(number)
