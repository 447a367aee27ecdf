"""The person a delivery is about (`webhook_events.subject_key`), derived in one place.

The receiver fills subject_key when it lands a delivery and the processor derives it for rows
left without one; both call `subject_key` so a delivery gets the same key whichever side
computed it (GDPR erasure and per-customer ordering look rows up by it). Keys are
`shopify:<numeric id>` (GraphQL gids reduced to the number), `klaviyo:<profile id>`,
`crm:<customer uuid>` and `manual:<admin app id>`. Pure and cheap: runs on every delivery.
"""

from __future__ import annotations

from typing import Any

MAX_IDENT_LENGTH = 255


def shopify_id(value: Any) -> str | None:
    """REST ids (123) and GraphQL ids (gid://shopify/Customer/123) name the same record."""
    if value is None or isinstance(value, bool) or value == "":
        return None
    if not isinstance(value, int | str):
        return None
    return str(value).rsplit("/", 1)[-1].strip() or None


def scalar_id(value: Any) -> str | None:
    """A scalar id as text; None for objects, lists, booleans, blanks and absurd lengths."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    text = str(value).replace("\x00", "").strip()
    return text if text and len(text) <= MAX_IDENT_LENGTH else None


def dig(payload: Any, *path: str) -> Any:
    """payload[path[0]][path[1]]...; None where a level is missing or not an object."""
    for key in path:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


def _key(prefix: str, ident: str | None) -> str | None:
    return f"{prefix}:{ident}" if ident else None


def _shopify(topic: str, payload: dict[str, Any]) -> str | None:
    if topic == "customers/merge":
        kept = payload.get("admin_graphql_api_customer_kept_id") or payload.get("customer_kept_id")
        return _key("shopify", scalar_id(shopify_id(kept)))
    if topic.startswith(("orders/", "refunds/", "checkouts/")):
        return _key("shopify", scalar_id(shopify_id(dig(payload, "customer", "id"))))
    for key in ("customerId", "customer_id", "admin_graphql_api_id", "id"):
        ident = scalar_id(shopify_id(payload.get(key)))
        if ident:
            return _key("shopify", ident)
    return _key("shopify", scalar_id(shopify_id(dig(payload, "customer", "id"))))


def _klaviyo(item: dict[str, Any]) -> str | None:
    inner = item.get("payload")
    if isinstance(inner, dict):  # a system webhook item {topic, external_id, payload: {data}}
        item = inner["data"] if isinstance(inner.get("data"), dict) else inner
    ident = scalar_id(dig(item, "relationships", "profile", "data", "id"))
    if ident is None and item.get("type") == "profile":
        ident = scalar_id(item.get("id"))
    return _key("klaviyo", ident or scalar_id(dig(item, "attributes", "profile_id")))


def _manual(payload: dict[str, Any]) -> str | None:
    """Admin actions: the first of customer_id, admin_id, shopify_customer_id, customer.admin_id."""
    if ident := scalar_id(payload.get("customer_id")):
        return _key("crm", ident)
    if ident := scalar_id(payload.get("admin_id")):
        return _key("manual", ident)
    if ident := scalar_id(shopify_id(payload.get("shopify_customer_id"))):
        return _key("shopify", ident)
    return _key("manual", scalar_id(dig(payload, "customer", "admin_id")))


def subject_key(source: str, topic: str, payload: Any) -> str | None:
    """The subject of one delivery (one Klaviyo item); None when the payload names nobody."""
    if not isinstance(payload, dict):
        return None
    if source == "shopify":
        return _shopify(topic, payload)
    if source == "klaviyo":
        return _klaviyo(payload)
    if source == "manual":
        return _manual(payload)
    return None
