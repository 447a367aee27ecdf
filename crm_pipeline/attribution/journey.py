"""An order's `customer_journey_summary` (REST-shaped, see sources/shopify/convert.py) as an
`order_attributions` row, and the channel rules of docs/attribution.md.

Journey states: `ready` (Shopify built the journey), `not_ready` (Shopify said `ready: false`;
asked again later), `unavailable` (Shopify returned no journey: orders from POS, drafts or apps),
`not_fetched` (the payload did not carry the field, e.g. a REST webhook; asked for later).
Nothing is inferred for orders without a ready journey: their channel is `unknown`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from crm_pipeline.normalize import parse_timestamp

UNKNOWN = "unknown"
SEARCH_ENGINES = frozenset({"google", "bing", "yahoo", "duckduckgo", "baidu", "yandex", "ecosia"})
SOCIAL_NETWORKS = frozenset(
    {
        "facebook",
        "instagram",
        "tiktok",
        "pinterest",
        "twitter",
        "x",
        "snapchat",
        "youtube",
        "linkedin",
        "reddit",
    }  # fmt: skip
)
# MarketingTactic values (Shopify Admin schema) that are messages sent to the customer
MESSAGE_TACTICS = frozenset({"NEWSLETTER", "MESSAGE", "ABANDONED_CART", "TRANSACTIONAL",
                             "NOTIFICATION"})  # fmt: skip
PAID_TACTICS = frozenset({"AD", "RETARGETING"})
PAID_MEDIUMS = frozenset({"cpc", "ppc", "paid", "paid_social", "paidsocial", "paid-social",
                          "display", "cpm"})  # fmt: skip

VISIT_COLUMNS = (
    "visit_at", "source", "source_type", "utm_source", "utm_medium", "utm_campaign",
    "utm_content", "utm_term", "landing_page", "referrer_url", "marketing_event_id",
    "marketing_event_type", "marketing_event_channel", "channel",
)  # fmt: skip
JOURNEY_COLUMNS = (
    "journey_status", "source_name", "days_to_conversion", "customer_order_index",
    *(f"first_{c}" for c in VISIT_COLUMNS), *(f"last_{c}" for c in VISIT_COLUMNS),
)  # fmt: skip


def _lower(value: Any) -> str:
    return str(value).strip().lower() if value not in (None, "") else ""


def without_query(url: Any) -> str | None:
    """scheme://host/path only: query strings and fragments can carry emails and tokens, and
    the UTM parameters are kept apart anyway."""
    if not url:
        return None
    parts = urlsplit(str(url))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")) or None


def channel(visit: dict[str, Any] | None) -> str:
    """The channel of one visit, by the first rule that matches (docs/attribution.md)."""
    if not visit:
        return UNKNOWN
    utm = visit.get("utm_parameters") or {}
    event = visit.get("marketing_event") or {}
    source = _lower(utm.get("source")) or _lower(visit.get("source"))
    medium = _lower(utm.get("medium"))
    tactic = str(visit.get("source_type") or event.get("type") or "").upper()
    if medium in ("email", "newsletter") or tactic in MESSAGE_TACTICS or source == "email":
        return "email"
    if medium == "sms" or source == "sms":
        return "sms"
    if tactic in PAID_TACTICS or medium in PAID_MEDIUMS:
        if source in SEARCH_ENGINES:
            return "paid_search"
        return "paid_social" if source in SOCIAL_NETWORKS else "paid_other"
    if tactic == "SEO" or source in SEARCH_ENGINES:
        return "organic_search"
    if source in SOCIAL_NETWORKS:
        return "organic_social"
    if tactic == "AFFILIATE":
        return "affiliate"
    if source == UNKNOWN:
        return UNKNOWN
    if source in ("direct", "") and not visit.get("referrer_url"):
        return "direct"
    return "referral"


def _visit_fields(visit: dict[str, Any] | None) -> dict[str, Any]:
    if not visit:
        return dict.fromkeys(VISIT_COLUMNS) | {"channel": UNKNOWN}
    utm = visit.get("utm_parameters") or {}
    event = visit.get("marketing_event") or {}
    occurred = parse_timestamp(visit.get("occurred_at"))
    return {
        "visit_at": occurred.isoformat() if occurred else None,
        "source": visit.get("source"),
        "source_type": visit.get("source_type"),
        "utm_source": utm.get("source"),
        "utm_medium": utm.get("medium"),
        "utm_campaign": utm.get("campaign"),
        "utm_content": utm.get("content"),
        "utm_term": utm.get("term"),
        "landing_page": without_query(visit.get("landing_page")),
        "referrer_url": without_query(visit.get("referrer_url")),
        "marketing_event_id": str(event["id"]) if event.get("id") is not None else None,
        "marketing_event_type": event.get("type"),
        "marketing_event_channel": event.get("marketing_channel_type"),
        "channel": channel(visit),
    }


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def journey_status(raw: dict[str, Any]) -> str:
    if "customer_journey_summary" not in raw:
        return "not_fetched"
    journey = raw["customer_journey_summary"]
    if not isinstance(journey, dict):
        return "unavailable"
    return "ready" if journey.get("ready") else "not_ready"


def journey_row(raw: dict[str, Any]) -> dict[str, Any]:
    """The `order_attributions` journey columns of a REST-shaped order."""
    status = journey_status(raw)
    journey = raw.get("customer_journey_summary") if status == "ready" else None
    journey = journey or {}
    row: dict[str, Any] = {
        "journey_status": status,
        "source_name": raw.get("source_name"),
        "days_to_conversion": _int(journey.get("days_to_conversion")),
        "customer_order_index": _int(journey.get("customer_order_index")),
    }
    for touch in ("first", "last"):
        for key, value in _visit_fields(journey.get(f"{touch}_visit")).items():
            row[f"{touch}_{key}"] = value
    return row
