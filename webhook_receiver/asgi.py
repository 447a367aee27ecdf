"""ASGI plumbing of the webhook fast path: the callable types, headers and the bounded body read.

The POST routes read the raw request themselves (the signature covers the exact bytes), with
no Starlette `Request` in between; these helpers are the little of Starlette they need.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from webhook_receiver.answers import Rejection

Headers = dict[str, str]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def scope_headers(scope: Scope) -> Headers:
    """The request headers as a dict (lower-case names, latin-1 like Starlette; last one wins)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class ClientGone(Exception):
    """The client disconnected before sending the whole body: nothing to answer."""


async def receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The raw body, refusing early on Content-Length and again while streaming (chunked)."""
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError as exc:
            raise Rejection(400, "malformed_body", "invalid Content-Length") from exc
        if too_big:
            raise Rejection(413, "too_large", f"body over {limit} bytes")
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: one message, no copy
        if len(body) > limit:
            raise Rejection(413, "too_large", f"body over {limit} bytes")
        return body
    chunks = [body]
    size = len(body)
    while True:
        if size > limit:
            raise Rejection(413, "too_large", f"body over {limit} bytes")
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if size > limit:
        raise Rejection(413, "too_large", f"body over {limit} bytes")
    return b"".join(chunks)
