"""Klaviyo JSON:API shapes: profiles and events (as pulled, in webhooks and in the store)."""

from __future__ import annotations

from typing import Any

from crm_pipeline.mapping.records import ActivityRecord, AddressRecord, CustomerRecord
from crm_pipeline.normalize import normalize_email, normalize_phone, parse_timestamp

# Klaviyo metric name -> our activity_type (docs/reference.md section 3).
METRIC_ACTIVITY = {
    "Opened Email": "email_open",
    "Clicked Email": "email_click",
    "Viewed Product": "product_view",
    "Added to Cart": "add_to_cart",
    "Active on Site": "active_on_site",
    "Placed Order": "purchase",
    "Started Checkout": "checkout_started",
    "Unsubscribed": "email_unsubscribe",
    # system-webhook metrics that withdraw consent (crm_pipeline/activation/consent.py)
    "Unsubscribed from Email Marketing": "email_unsubscribe",
    "Marked Email as Spam": "email_unsubscribe",
    "Unsubscribed from SMS Marketing": "sms_unsubscribe",
    "Clicked SMS": "sms_click",
    "Viewed Page": "page_view",
}

# Klaviyo system-webhook topic -> the metric its events are; only Klaviyo's own metrics have
# topics, and these are the ones METRIC_ACTIVITY applies (`webhooks register --source klaviyo`)
KLAVIYO_WEBHOOK_TOPICS = {
    "event:klaviyo.opened_email": "Opened Email",
    "event:klaviyo.clicked_email": "Clicked Email",
    "event:klaviyo.clicked_sms": "Clicked SMS",
    "event:klaviyo.unsubscribed_from_email_marketing": "Unsubscribed from Email Marketing",
    "event:klaviyo.marked_email_as_spam": "Marked Email as Spam",
    "event:klaviyo.unsubscribed_from_sms_marketing": "Unsubscribed from SMS Marketing",
}


def webhook_item(item: dict[str, Any]) -> dict[str, Any]:
    """A system-webhook item as the JSON:API event it carries.

    Klaviyo delivers `{"topic", "external_id", "payload"}` with the payload shaped like a Get
    Event answer (`{"data": {...}, "included": [...]}`); an item that is already a resource
    (our sandbox, older tests) is returned as it is. The topic names the metric when the
    payload does not include it.
    """
    payload = item.get("payload")
    if not isinstance(payload, dict):
        return item
    data = payload.get("data")
    event = dict(data if isinstance(data, dict) else payload)
    if payload.get("included"):
        event["included"] = payload["included"]
    metric = KLAVIYO_WEBHOOK_TOPICS.get(str(item.get("topic")))
    attrs = event.get("attributes")
    if metric and isinstance(attrs, dict) and not attrs.get("metric_name"):
        event["attributes"] = {**attrs, "metric_name": metric}
    return event


def _consent(subs: dict[str, Any], channel: str) -> tuple[bool | None, Any]:
    marketing = ((subs or {}).get(channel) or {}).get("marketing") or {}
    consent = marketing.get("consent")
    if not consent:
        return None, None
    return consent == "SUBSCRIBED", parse_timestamp(marketing.get("consent_timestamp"))


def _without_links(raw: dict[str, Any]) -> dict[str, Any]:
    """JSON:API `links` name the host that answered; they are not data and must not change
    the content hash (a moved base URL would otherwise look like a changed profile)."""
    clean = {k: v for k, v in raw.items() if k != "links"}
    if isinstance(clean.get("relationships"), dict):
        clean["relationships"] = {
            name: {k: v for k, v in (rel or {}).items() if k != "links"}
            for name, rel in clean["relationships"].items()
        }
    return clean


def map_profile(raw: dict[str, Any]) -> CustomerRecord:
    raw = _without_links(raw)
    attrs = raw.get("attributes") or {}
    location = attrs.get("location") or {}
    country = location.get("country")
    region = country if isinstance(country, str) and len(country) == 2 else None
    accepts_email, email_consent_at = _consent(attrs.get("subscriptions"), "email")
    accepts_sms, _ = _consent(attrs.get("subscriptions"), "sms")
    klaviyo_attrs: dict[str, Any] = {}
    if attrs.get("properties"):
        klaviyo_attrs["properties"] = attrs["properties"]
    if attrs.get("predictive_analytics"):
        klaviyo_attrs["predictive_analytics"] = attrs["predictive_analytics"]
    for key in ("organization", "title"):
        if attrs.get(key):
            klaviyo_attrs[key] = attrs[key]
    external_id = raw.get("id")
    addresses = []
    if any(location.get(k) for k in ("address1", "city", "zip", "country")):
        addresses.append(
            AddressRecord(
                external_id=str(external_id),
                is_default=True,
                address1=location.get("address1"),
                address2=location.get("address2"),
                city=location.get("city"),
                province=location.get("region"),
                country=country if not region else None,
                country_code=region.upper() if region else None,
                zip=location.get("zip"),
                latitude=_float(location.get("latitude")),
                longitude=_float(location.get("longitude")),
                timezone=location.get("timezone"),
            )
        )
    link = attrs.get("external_id")
    return CustomerRecord(
        source="klaviyo",
        external_id=str(external_id) if external_id else None,
        source_updated_at=parse_timestamp(attrs.get("updated")),
        raw_email=attrs.get("email"),
        email=normalize_email(attrs.get("email")),
        phone=attrs.get("phone_number"),
        phone_normalized=normalize_phone(attrs.get("phone_number"), region),
        first_name=attrs.get("first_name") or None,
        last_name=attrs.get("last_name") or None,
        accepts_email_marketing=accepts_email,
        email_consent_at=email_consent_at,
        accepts_sms_marketing=accepts_sms,
        created_at=parse_timestamp(attrs.get("created")),
        link_shopify_id=str(link).rsplit("/", 1)[-1] if link else None,
        attributes={"klaviyo": klaviyo_attrs} if klaviyo_attrs else {},
        addresses=addresses,
        raw=raw,
    )


def map_event(raw: dict[str, Any], metric_names: dict[str, str]) -> ActivityRecord:
    attrs = raw.get("attributes") or {}
    rel = raw.get("relationships") or {}
    profile_id = ((rel.get("profile") or {}).get("data") or {}).get("id")
    metric_id = ((rel.get("metric") or {}).get("data") or {}).get("id")
    metric = attrs.get("metric_name") or metric_names.get(metric_id or "")
    props = attrs.get("event_properties") or {}
    occurred = parse_timestamp(attrs.get("datetime"))
    if occurred is None and attrs.get("timestamp") is not None:
        from datetime import UTC, datetime

        occurred = datetime.fromtimestamp(int(attrs["timestamp"]), tz=UTC)
    activity = METRIC_ACTIVITY.get(metric or "")
    if activity is None and metric:
        activity = "other"
    return ActivityRecord(
        source="klaviyo",
        external_id=str(raw["id"]) if raw.get("id") else None,
        profile_external_id=profile_id,
        activity_type=activity,
        occurred_at=occurred,
        session_id=props.get("$session_id") or props.get("session_id"),
        utm_source=props.get("utm_source") or props.get("$utm_source"),
        utm_medium=props.get("utm_medium") or props.get("$utm_medium"),
        utm_campaign=props.get("utm_campaign") or props.get("Campaign Name"),
        ip_address=props.get("$ip") or props.get("ip_address"),
        user_agent=props.get("$user_agent") or props.get("user_agent"),
        properties={"metric": metric, **props},
        raw=raw,
    )


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
