"""Signature checks for each sender, on the raw body bytes, with constant-time comparison.

Each check raises SignatureError with a short machine reason (used as a metrics label) instead of
returning a bool, so the route cannot forget to act on a failure.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time

from crm_pipeline.normalize import parse_instant


class SignatureError(Exception):
    """The delivery is not provably from the sender: answer 401 and store nothing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# The admin app's requests are refused when their timestamp is further than this from our clock.
ADMIN_TOLERANCE_SECONDS = 300


def sign_base64(body: bytes, secret: bytes) -> str:
    """Shopify's scheme: base64 HMAC-SHA256 of the raw body."""
    return base64.b64encode(hmac.digest(secret, body, "sha256")).decode()


def sign_klaviyo(body: bytes, timestamp: str, secret: bytes) -> str:
    """Klaviyo's scheme: hex HMAC-SHA256 of the raw body followed by the timestamp header."""
    return hmac.digest(secret, body + timestamp.encode(), "sha256").hex()


def verify_base64(body: bytes, header: str | None, secret: bytes) -> None:
    """Check an X-Shopify-Hmac-Sha256 header."""
    if not header:
        raise SignatureError("missing_signature")
    try:
        given = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("bad_signature") from exc
    # hmac.digest: OpenSSL's one-shot HMAC, several times cheaper than an hmac.new object.
    expected = hmac.digest(secret, body, "sha256")
    if not hmac.compare_digest(given, expected):
        raise SignatureError("bad_signature")


def parse_timestamp(value: str) -> float:
    """Klaviyo-Timestamp as epoch seconds: integer seconds, milliseconds or ISO 8601."""
    moment = parse_instant(value)
    if moment is None:
        raise SignatureError("bad_timestamp")
    return moment.timestamp()


def verify_klaviyo(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    secret: bytes,
    tolerance_seconds: float,
    now: float | None = None,
) -> None:
    """Check Klaviyo-Signature and refuse timestamps outside the window (replays)."""
    if not signature or not timestamp:
        raise SignatureError("missing_signature")
    expected = sign_klaviyo(body, timestamp, secret)
    if not hmac.compare_digest(signature.strip().lower().encode(), expected.encode()):
        raise SignatureError("bad_signature")
    # Checked after the HMAC so an attacker cannot probe the clock with unsigned requests.
    sent = parse_timestamp(timestamp)
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_seconds:
        raise SignatureError("stale_timestamp")


def verify_admin(
    message: bytes,
    signature: str | None,
    timestamp: str | None,
    secret: bytes,
    now: float | None = None,
) -> None:
    """Check X-Crm-Hmac-Sha256 (base64 HMAC-SHA256 of `timestamp + "." + message`), then the
    clock window. The message is the raw body of a POST, or `GET <path>` of a status request.

    The timestamp is inside the signed text, so an old request cannot be given a fresh one;
    the action and its id are inside the body, so nothing that decides the effect is unsigned.
    """
    if not signature or not timestamp:
        raise SignatureError("missing_signature")
    verify_base64(timestamp.encode("latin-1") + b"." + message, signature, secret)
    # After the HMAC, as for Klaviyo: unsigned requests cannot probe the clock.
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureError("bad_timestamp")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > ADMIN_TOLERANCE_SECONDS:
        raise SignatureError("stale_timestamp")
