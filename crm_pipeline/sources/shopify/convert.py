"""GraphQL nodes -> the REST resource shape (customers/create and orders/create payloads), the
shape of the store files and of webhooks, so one mapping downstream serves all three."""

from __future__ import annotations

import functools
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from crm_pipeline.sources.shopify.queries import _ADDRESS


def gid_to_id(gid: str | None) -> int | None:
    """`gid://shopify/Customer/123?model_name=X` -> 123."""
    if not gid:
        return None
    return int(str(gid).rsplit("/", 1)[-1].split("?", 1)[0])


def _lower(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else value


_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@functools.lru_cache(maxsize=1024)
def _snake(key: str) -> str:
    """camelCase -> snake_case; cached: the same few dozen keys repeat on every record."""
    return _SNAKE.sub("_", key).lower()


def _address_to_rest(
    node: dict[str, Any] | None, customer_id: int | None, default_id: int | None
) -> dict[str, Any] | None:
    if not node:
        return None
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "id":
            out["id"] = gid_to_id(value)
            out["customer_id"] = customer_id
        else:
            out[_ADDRESS_KEYS.get(key) or _snake(key)] = value
    out["default"] = out.get("id") is not None and out.get("id") == default_id
    return out


# REST names of the GraphQL address fields (a dict lookup per key instead of a call)
_ADDRESS_KEYS = {key: _snake(key) for key in _ADDRESS.split() if key != "id"}
_ADDRESS_KEYS["countryCodeV2"] = "country_code"


def _default_address(
    default: dict[str, Any] | None,
    nodes: list[dict[str, Any]],
    converted: list[dict[str, Any] | None],
    customer_id: int | None,
    default_id: int | None,
) -> dict[str, Any] | None:
    """The default address, converted once: it is usually one of `addresses`, field for field."""
    for node, address in zip(nodes, converted, strict=True):
        if node == default and address is not None:
            return dict(address)
    return _address_to_rest(default, customer_id, default_id)


def _consent_to_rest(node: dict[str, Any] | None) -> dict[str, Any] | None:
    if not node:
        return None
    out = {
        "state": _lower(node.get("marketingState")),
        "opt_in_level": _lower(node.get("marketingOptInLevel")),
        "consent_updated_at": node.get("consentUpdatedAt"),
    }
    if "consentCollectedFrom" in node:
        out["consent_collected_from"] = node.get("consentCollectedFrom")
    return out


def customer_to_rest(node: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL `Customer` node -> the REST customer (customers/create webhook shape)."""
    cid = gid_to_id(node["id"])
    default = node.get("defaultAddress") or None
    default_id = gid_to_id(default.get("id")) if default else None
    spent = node.get("amountSpent") or {}
    tags = node.get("tags") or []
    nodes = node.get("addresses") or []
    addresses = [_address_to_rest(a, cid, default_id) for a in nodes]
    return {
        "id": cid,
        "admin_graphql_api_id": node["id"],
        "email": node.get("email"),
        "first_name": node.get("firstName"),
        "last_name": node.get("lastName"),
        "phone": node.get("phone"),
        "state": _lower(node.get("state")),
        "tags": ", ".join(tags) if isinstance(tags, list) else tags,
        "note": node.get("note"),
        "verified_email": node.get("verifiedEmail"),
        "tax_exempt": node.get("taxExempt"),
        "email_marketing_consent": _consent_to_rest(node.get("emailMarketingConsent")),
        "sms_marketing_consent": _consent_to_rest(node.get("smsMarketingConsent")),
        "addresses": addresses,
        "default_address": _default_address(default, nodes, addresses, cid, default_id),
        "created_at": node.get("createdAt"),
        "updated_at": node.get("updatedAt"),
        "orders_count": int(node.get("numberOfOrders") or 0),
        "total_spent": spent.get("amount"),
        "currency": spent.get("currencyCode"),
        "multipass_identifier": node.get("multipassIdentifier"),
        "tax_exemptions": [_lower(t) for t in node.get("taxExemptions") or []],
        "last_order_id": gid_to_id((node.get("lastOrder") or {}).get("id")),
    }


_FULFILLMENT: dict[str | None, str | None] = {
    "UNFULFILLED": None,
    "FULFILLED": "fulfilled",
    "PARTIALLY_FULFILLED": "partial",
}


def _shop_money(node: dict[str, Any] | None) -> dict[str, Any]:
    return ((node or {}).get("shopMoney")) or {}


def _nodes(conn: Any) -> list[dict[str, Any]]:
    """Children in any shape we receive: a list (bulk), `{nodes}` or `{edges{node}}`."""
    if conn is None:
        return []
    if isinstance(conn, list):
        return conn
    if "nodes" in conn:
        return conn["nodes"] or []
    return [e["node"] for e in conn.get("edges") or []]


def _line_item_to_rest(node: dict[str, Any]) -> dict[str, Any]:
    product = node.get("product") or {}
    return {
        "id": gid_to_id(node.get("id")),
        "admin_graphql_api_id": node.get("id"),
        "product_id": gid_to_id(product.get("id")),
        "title": node.get("title"),
        "vendor": node.get("vendor"),
        "product_type": product.get("productType"),
        "quantity": node.get("quantity"),
        "sku": node.get("sku"),
        "price": _shop_money(node.get("originalUnitPriceSet")).get("amount"),
    }


def _decimal(value: str) -> Decimal | None:
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def _refund_to_rest(node: dict[str, Any]) -> dict[str, Any]:
    amount = _shop_money(node.get("totalRefundedSet")).get("amount")
    has_amount = amount is not None and _decimal(amount) != 0
    transactions = [{"amount": amount, "kind": "refund", "status": "success"}] if has_amount else []
    return {
        "id": gid_to_id(node.get("id")),
        "admin_graphql_api_id": node.get("id"),
        "created_at": node.get("createdAt"),
        "note": node.get("note"),
        # GraphQL gives the refunded total; one refund transaction carries it
        "transactions": transactions,
        "refund_line_items": [
            {
                "line_item_id": gid_to_id((rli.get("lineItem") or {}).get("id")),
                "quantity": rli.get("quantity"),
            }
            for rli in _nodes(node.get("refundLineItems"))
        ],
    }


def _snake_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {_snake(k): _snake_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_tree(v) for v in value]
    return value


def journey_to_rest(node: dict[str, Any]) -> dict[str, Any] | None:
    """`customerJourneySummary` in snake case (REST has no such field: this is our shape, the
    one orders.jsonl carries); None when Shopify has no journey for the order."""
    journey = node.get("customerJourneySummary")
    if not journey:
        return None
    out: dict[str, Any] = _snake_tree(journey)
    for visit in ("first_visit", "last_visit"):
        event = (out.get(visit) or {}).get("marketing_event")
        if event and event.get("id"):
            event["id"] = gid_to_id(event["id"])
        if out.get(visit) and out[visit].get("id"):
            out[visit]["id"] = gid_to_id(out[visit]["id"])
    return out


def order_to_rest(node: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL `Order` node (children attached) -> the REST order (orders/create shape)."""
    total = _shop_money(node.get("totalPriceSet"))
    customer = node.get("customer") or None
    fulfillment = node.get("displayFulfillmentStatus")
    tags = node.get("tags") or []
    return {
        "id": gid_to_id(node["id"]),
        "admin_graphql_api_id": node["id"],
        "name": node.get("name"),
        "customer": {"id": gid_to_id(customer["id"])} if customer else None,
        "email": node.get("email"),
        "created_at": node.get("createdAt"),
        "updated_at": node.get("updatedAt"),
        "processed_at": node.get("processedAt"),
        "cancelled_at": node.get("cancelledAt"),
        "cancel_reason": _lower(node.get("cancelReason")),
        "financial_status": _lower(node.get("displayFinancialStatus")),
        "fulfillment_status": _FULFILLMENT.get(fulfillment, _lower(fulfillment)),
        "total_price": total.get("amount"),
        "subtotal_price": _shop_money(node.get("subtotalPriceSet")).get("amount"),
        "total_tax": _shop_money(node.get("totalTaxSet")).get("amount"),
        "source_name": node.get("sourceName"),
        "customer_journey_summary": journey_to_rest(node),
        "currency": node.get("currencyCode") or total.get("currencyCode"),
        "tags": ", ".join(tags) if isinstance(tags, list) else tags,
        "line_items": [_line_item_to_rest(li) for li in _nodes(node.get("lineItems"))],
        "refunds": [
            {**_refund_to_rest(r), "order_id": gid_to_id(node["id"])}
            for r in node.get("refunds") or []
        ],
    }
