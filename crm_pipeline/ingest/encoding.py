"""How a customer source record becomes the bytes COPY writes: hashed and encoded once, in
the producer thread or a decoding worker process (ingest/workers.py), never on the merge's
critical path. Kept free of pandas and the loaders so a worker process imports little."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from crm_pipeline.db.copy import copy_field, copy_json, copy_text_fields
from crm_pipeline.mapping.records import CustomerRecord, canonical_json, json_hash


def address_dict(address: Any) -> dict[str, Any]:
    return {name: getattr(address, name) for name in address.__slots__}


# sync_status ('synced') and last_synced_at (now()) come from the column defaults
SOURCE_COLUMNS = (
    "customer_id", "source", "external_id", "source_data", "profile", "content_hash",
    "source_updated_at",
)  # fmt: skip
ADDRESS_COLUMNS = (
    "customer_id", "source", "external_id", "source_external_id", "address_type", "is_default",
    "first_name", "last_name", "company", "address1", "address2", "city", "province",
    "province_code", "country", "country_code", "zip", "phone", "latitude", "longitude",
    "timezone",
)  # fmt: skip
_COUNTRY_CODE = re.compile(r"^[A-Z]{2}$")


@dataclass(slots=True)
class EncodedSource:
    """A source record as COPY writes it, minus the customer id identity resolution assigns."""

    digest: str
    source_tail: bytes  # SOURCE_COLUMNS after customer_id
    address_tails: list[bytes]  # ADDRESS_COLUMNS after customer_id, one per address
    customer_tail: bytes  # NEW_CUSTOMER_COLUMNS between id and created_at (customer_fields)
    addresses_json: bytes | None = None  # the addresses for the merge path (set by workers)


def encode_source(record: CustomerRecord, raw_json: bytes | None = None) -> EncodedSource:
    """Hash and COPY-encode a record; pure, so it runs off the main thread. `raw_json` is the
    record's `canonical_json` when the caller already has it."""
    if raw_json is None:
        raw_json = canonical_json(record.source_record())  # hashed and stored: once
    digest = json_hash(raw_json)
    source_tail = b"\t".join(
        (
            copy_text_fields((record.source, record.external_id)),
            copy_json(raw_json),
            copy_json(orjson.dumps(record.profile(), default=str)),
            digest.encode(),
            copy_field(record.source_updated_at),
        )
    )
    return EncodedSource(
        digest=digest,
        source_tail=source_tail,
        address_tails=[copy_text_fields(_address_fields(record, a)) for a in record.addresses],
        customer_tail=_customer_tail(record),
    )


def _customer_tail(record: CustomerRecord) -> bytes:
    *scalars, tags, attributes, status, customer_type, updated = customer_fields(record)
    return b"\t".join(
        (
            copy_text_fields(scalars),
            copy_field(tags),
            copy_json(orjson.dumps(attributes, default=str)),
            copy_text_fields((status, customer_type)),
            copy_field(updated),
        )
    )


NEW_CUSTOMER_COLUMNS = (
    "id", "email", "phone", "phone_normalized", "first_name", "last_name", "notes",
    "accepts_email_marketing", "accepts_sms_marketing", "tags", "custom_attributes", "status",
    "customer_type", "source_updated_at", "created_at",
)  # fmt: skip


def customer_fields(record: CustomerRecord) -> tuple[Any, ...]:
    """NEW_CUSTOMER_COLUMNS between id and created_at for a person known from this record alone:
    what SURVIVORSHIP_SQL computes for one source row and no existing customer (a test checks
    that survivorship changes nothing after these rows are written)."""
    tags = sorted(set(record.tags))
    if "wholesale" in tags:
        customer_type = "wholesale"
    elif "affiliate" in tags:
        customer_type = "affiliate"
    elif record.source == "shopify" and record.state == "enabled":
        customer_type = "registered"
    else:
        customer_type = "guest"
    invited = record.source == "shopify" and record.state == "invited"
    return (
        record.email, record.phone, record.phone_normalized, record.first_name,
        record.last_name, record.note, bool(record.accepts_email_marketing),
        bool(record.accepts_sms_marketing), tags, record.attributes,
        "pending" if invited else "active", customer_type, record.source_updated_at,
    )  # fmt: skip


def encoded(record: CustomerRecord) -> EncodedSource:
    """The record's encoding, computed once (ahead in the producer thread, or here on demand)."""
    if record.encoded is None:
        record.encoded = encode_source(record)
    return record.encoded


def _coordinate(value: Any, limit: float) -> float | None:
    """A latitude/longitude within +-limit, else None (as the merge's CASE does)."""
    if value is None:
        return None
    if type(value) is not float:
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
    return value if -limit <= value <= limit else None


def _address_fields(record: CustomerRecord, a: Any) -> tuple[Any, ...]:
    """ADDRESS_COLUMNS after customer_id, cleaned exactly like the merge statement cleans."""
    code = a.country_code if a.country_code and _COUNTRY_CODE.match(a.country_code) else None
    return (
        record.source, a.external_id, record.external_id, "both", bool(a.is_default),
        a.first_name, a.last_name, a.company, a.address1, a.address2, a.city, a.province,
        a.province_code, a.country, code, a.zip, a.phone, _coordinate(a.latitude, 90),
        _coordinate(a.longitude, 180), a.timezone,
    )  # fmt: skip
