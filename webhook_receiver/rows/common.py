"""What every sender's row builder uses: JSON parsing, header text, stored headers; and the
shared rate limit `deliver` applies to the rows they build.

Nothing here logs the payload's people (emails, phones); refusals are `Rejection`s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, overload

import orjson

from webhook_receiver.answers import Rejection
from webhook_receiver.asgi import Headers
from webhook_receiver.landing import DatabaseUnavailable, EventRow
from webhook_receiver.ratelimit import RateLimited
from webhook_receiver.receiver import Receiver

MAX_ID_LENGTH = 255
# Never persisted: credentials a proxy might add in front of us.
_DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

RowBuilder = Callable[[Receiver, Headers, bytes], list[EventRow]]
"""Checks a request (signature first) and turns it into rows; raises Rejection/SignatureError."""


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "malformed_body", "body is not valid JSON") from exc


def strip_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000; drop it rather than lose the delivery."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [strip_nul(v) for v in value]
    if isinstance(value, dict):
        return {strip_nul(k): strip_nul(v) for k, v in value.items()}
    return value


def storable_json(body: bytes, parsed: Any) -> str:
    """The payload text for jsonb: the raw body itself unless it needs cleaning."""
    if b"\\u0000" in body:
        return orjson.dumps(strip_nul(parsed)).decode()
    return body.decode()


@overload
def header_text(value: Any, name: str, required: Literal[True] = True) -> str: ...
@overload
def header_text(value: Any, name: str, required: bool) -> str | None: ...
def header_text(value: Any, name: str, required: bool = True) -> str | None:
    """A header value as stored: NULs dropped, stripped, bounded; missing -> 400 if required."""
    if value is None or value == "":
        if required:
            raise Rejection(400, "missing_headers", f"missing {name}")
        return None
    text = str(value).replace("\x00", "").strip()
    if len(text) > MAX_ID_LENGTH:
        raise Rejection(400, "malformed_headers", f"{name} longer than {MAX_ID_LENGTH}")
    if required and not text:
        raise Rejection(400, "missing_headers", f"missing {name}")
    return text or None


def headers_json(headers: Headers) -> str:
    """The request headers as stored (credentials a proxy might add are never persisted)."""
    # No NUL check: the HTTP parser refuses NUL in header names and values.
    if _DROPPED_HEADERS.isdisjoint(headers):
        return orjson.dumps(headers).decode()
    return orjson.dumps({k: v for k, v in headers.items() if k not in _DROPPED_HEADERS}).decode()


async def rate_limit(receiver: Receiver, source: str, rows: list[EventRow]) -> None:
    """429 with Retry-After when the source's (or the shop's) shared budget is spent; 503 when
    the shared counters cannot be reached (the sender retries)."""
    try:
        await receiver.limiter.hit(source, rows[0].shop_domain if rows else None)
    except RateLimited as exc:
        raise Rejection(
            429, "rate_limited", str(exc), {"Retry-After": str(exc.retry_after)}
        ) from exc
    except DatabaseUnavailable as exc:
        raise Rejection(
            503, "db_unavailable", "database unavailable, retry later", {"Retry-After": "5"}
        ) from exc
