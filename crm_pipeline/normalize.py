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
    """Shopify's "a, b" tag string (or a list) to a sorted, de-duplicated list; the one tag
    parser of pulls, imports, webhooks and admin actions. TypeError for any other shape."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list):
        raise TypeError(f"tags must be a string or a list, not {type(raw).__name__}")
    return sorted({str(t).strip() for t in raw if str(t).strip()})


def parse_instant(raw: object) -> datetime | None:
    """A moment sent as epoch seconds, epoch milliseconds (numbers past 1e11) or ISO-8601 text,
    as aware UTC within years 1970-9999; None when it is none of those. For headers such as
    `X-Shopify-Triggered-At` and `Klaviyo-Timestamp`."""
    if isinstance(raw, str) and ":" not in raw:  # no ISO time, perhaps a number
        try:
            raw = float(raw.strip())
        except ValueError:
            pass
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        try:
            moment = datetime.fromtimestamp(raw / 1000 if raw > 1e11 else raw, UTC)
        except (ValueError, OverflowError, OSError):
            return None
    else:
        moment = parse_timestamp(raw)
    if moment is None or not 1970 <= moment.year <= 9999:
        return None
    return moment
