"""The record types every source is mapped into before validation and loading."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson


def canonical_json(data: Any) -> bytes:
    """A JSON-able value as JSON with sorted keys: what `content_hash` hashes, and what the
    loaders store, so one serialisation serves both."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)


def content_hash(data: Any) -> str:
    """Stable hash of a JSON-able value (keys sorted) to skip unchanged records."""
    return json_hash(canonical_json(data))


def json_hash(canonical: bytes) -> str:
    """`content_hash` of a value whose `canonical_json` is already at hand."""
    return hashlib.md5(canonical).hexdigest()


@dataclass(slots=True)
class AddressRecord:
    external_id: str
    is_default: bool = False
    address_type: str = "both"
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    address1: str | None = None
    address2: str | None = None
    city: str | None = None
    province: str | None = None
    province_code: str | None = None
    country: str | None = None
    country_code: str | None = None
    zip: str | None = None
    phone: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    timezone: str | None = None


@dataclass(slots=True)
class CustomerRecord:
    """A person as one source sees them; `profile` is what survivorship reads."""

    source: str
    external_id: str | None
    source_updated_at: datetime | None
    email: str | None  # normalised (trim + lowercase)
    phone: str | None  # as received
    phone_normalized: str | None
    first_name: str | None = None
    last_name: str | None = None
    tags: list[str] = field(default_factory=list)
    note: str | None = None
    state: str | None = None
    accepts_email_marketing: bool | None = None
    email_consent_at: datetime | None = None
    accepts_sms_marketing: bool | None = None
    created_at: datetime | None = None
    link_shopify_id: str | None = None  # Klaviyo external_id pointing at a Shopify customer
    attributes: dict[str, Any] = field(default_factory=dict)
    addresses: list[AddressRecord] = field(default_factory=list)
    # the source record as received; None when a worker process mapped the record and sent
    # `raw_json` instead (ingest/workers.py): read it through `source_record()`
    raw: dict[str, Any] | None = field(default_factory=dict)
    raw_email: str | None = None
    # set by the customer loader's producer thread: the bytes COPY will write (ingest/encoding)
    encoded: Any = None
    raw_json: bytes | None = None

    def source_record(self) -> dict[str, Any]:
        """The raw source record, decoded on first use for records mapped in a worker."""
        if self.raw is None:
            self.raw = orjson.loads(self.raw_json or b"{}")
        return self.raw

    def profile(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "phone": self.phone,
            "phone_normalized": self.phone_normalized,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "tags": self.tags,
            "note": self.note,
            "state": self.state,
            "accepts_email_marketing": self.accepts_email_marketing,
            "email_consent_at": _iso(self.email_consent_at),
            "accepts_sms_marketing": self.accepts_sms_marketing,
            "created_at": _iso(self.created_at),
            "link_shopify_id": self.link_shopify_id,
            "attributes": self.attributes,
        }


@dataclass(slots=True)
class LineItemRecord:
    external_id: str
    product_id: str | None
    title: str | None
    vendor: str | None
    product_type: str | None
    quantity: int
    price: Decimal
    refunded_quantity: int = 0


@dataclass(slots=True)
class OrderRecord:
    source: str
    external_id: str | None
    customer_external_id: str | None
    email: str | None
    created_at: datetime | None
    source_updated_at: datetime | None
    cancelled_at: datetime | None
    financial_status: str | None
    fulfillment_status: str | None
    total_price: Decimal | None
    total_refunded: Decimal
    currency: str | None
    line_items: list[LineItemRecord] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ActivityRecord:
    source: str
    external_id: str | None
    profile_external_id: str | None  # the source's id of the person (Klaviyo profile id)
    activity_type: str | None
    occurred_at: datetime | None
    session_id: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
