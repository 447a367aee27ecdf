"""Refusals and answers of the receiver, independent of the framework.

A check raises `Rejection` (status, metrics reason, detail); the delivery path turns it into an
`Answer` (status, JSON body, headers) that the ASGI fast path sends as is and FastAPI routes wrap
in a `Response`. The bodies are JSON via orjson, the same bytes on either path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi.responses import Response


class Rejection(Exception):
    """A delivery refused with an HTTP status; `reason` is the metrics label."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Answer:
    """Status, JSON body and extra headers of a delivery's answer, independent of the framework."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def answer(status: int, content: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, orjson.dumps(content), tuple((headers or {}).items()))


def rejected(exc: Rejection) -> Answer:
    content: dict[str, Any] = {"status": "rejected", "reason": exc.reason, "detail": exc.detail}
    if exc.errors is not None:
        content["errors"] = exc.errors
    return answer(exc.status, content, exc.headers)


def signature_failed(reason: str) -> dict[str, Any]:
    """The body of a 401: the reason label, never which part of the signature was wrong."""
    return {"status": "rejected", "reason": reason, "detail": "signature verification failed"}


def json_response(
    status: int, content: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


# The two everyday answers, built once.
ACCEPTED_ONE = answer(200, {"status": "accepted", "stored": 1, "duplicates": 0})
DUPLICATE_ONE = answer(200, {"status": "duplicate", "stored": 0, "duplicates": 1})
