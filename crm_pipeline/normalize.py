"""The one place emails, phones and timestamps are normalised (identity keys depend on it)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache

import phonenumbers

# Deliberately permissive: one @, a dot in the domain, no spaces. Deliverability is not our job.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(raw: object) -> str | None:
    """trim + lowercase; None for empty values. Invalid shapes are kept for the validator."""
    if not isinstance(raw, str):
        return None
    email = raw.strip().lower()
    return email or None


def is_valid_email(email: str | None) -> bool:
    return email is not None and bool(_EMAIL.match(email))


@lru_cache(maxsize=262_144)
def normalize_phone(raw: object, region: str | None = None) -> str | None:
    """E.164 form of a phone number, or None when it is not a valid number.

    National formats need a region: the caller passes the customer's country code when known;
    without one we assume US, the most common default of Shopify stores.
    """
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        parsed = phonenumbers.parse(raw, (region or "US").upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def parse_timestamp(raw: object) -> datetime | None:
    """ISO-8601 text (with Z, offset or naive-as-UTC) to an aware UTC datetime."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, datetime):
        value = raw
    else:
        text = str(raw).strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def split_tags(raw: object) -> list[str]:
    """Shopify's "a, b" tag string (or a list) to a sorted, de-duplicated list."""
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else str(raw).split(",")
    return sorted({str(t).strip() for t in items if str(t).strip()})
