"""Klaviyo's published OpenAPI description, and a check of recorded exchanges against it.

`problems(exchange)` returns what is wrong with one request/response pair: the operation must
exist for its path and method, the request (parameters, `revision` header, auth, body and its
content type) and the response (status, content type, body schema) must validate with
openapi-core, and the rules the description states only in prose hold too (JSON:API media
type, `Retry-After` on a 429, cursor links that carry `page[cursor]`).
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from werkzeug.datastructures import MultiDict

from crm_pipeline_tests.contracts.recording_proxy import Exchange

SPEC_PATH = Path(__file__).parent / "klaviyo" / "stable.json.gz"
HOST = "https://a.klaviyo.com"
JSON_API = "application/vnd.api+json"


@functools.cache
def spec() -> dict[str, Any]:
    with gzip.open(SPEC_PATH, "rb") as fh:
        return json.load(fh)


def _nullable_refs(node: Any, schemas: dict[str, Any]) -> Any:
    """`{"$ref": X, "nullable": true}` as the referenced schema made nullable.

    Klaviyo marks 200+ references nullable this way (a profile's `location`, `predictive_
    analytics`, `subscriptions.sms`, ...). OpenAPI 3.0 ignores siblings of `$ref`, so a strict
    validator would refuse the `null` the description plainly allows; we honour what it says.
    """
    if isinstance(node, list):
        return [_nullable_refs(item, schemas) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node and node.get("nullable") is True:
        target = schemas[node["$ref"].rsplit("/", 1)[-1]]
        return {**_nullable_refs(target, schemas), "nullable": True}
    return {key: _nullable_refs(value, schemas) for key, value in node.items()}


@functools.cache
def _validated_spec() -> dict[str, Any]:
    raw = spec()
    return _nullable_refs(raw, raw["components"]["schemas"])


@functools.cache
def openapi() -> OpenAPI:
    # the description itself is not checked: a few `default`s in it match both branches of
    # their `oneOf` (web-safe font names), which the strict spec validator refuses
    return OpenAPI.from_dict(_validated_spec(), config=Config(spec_validator_cls=None))


def revision() -> str:
    """The API revision the description documents (`info.version`)."""
    return spec()["info"]["version"]


def operation_id(method: str, path: str) -> str | None:
    """The operationId for a concrete path (`/api/profiles/01ABC/`), None when undocumented."""
    for template, ops in spec()["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "/?$"
        if re.match(pattern, path) and isinstance(ops.get(method.lower()), dict):
            return ops[method.lower()]["operationId"]
    return None


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def _leaves(error: Any) -> Iterator[str]:
    """The innermost schema errors (what is actually wrong), with where they are."""
    if not error.context:
        yield f"/{'/'.join(map(str, error.absolute_path))}: {error.message[:200]}"
    for sub in error.context or []:
        yield from _leaves(sub)


def _errors(exc: Exception) -> str:
    cause = exc.__cause__ or exc
    details = getattr(cause, "schema_errors", None)
    if details:
        return f"{type(cause).__name__}: " + "; ".join(
            sorted({leaf for error in details for leaf in _leaves(error)})
        )
    return f"{type(exc).__name__}: {exc}" + (f" ({exc.__cause__})" if exc.__cause__ else "")


def _request(ex: Exchange) -> MockRequest:
    return MockRequest(
        HOST,
        ex.method,
        ex.path.rstrip("/") or "/",  # Klaviyo answers with and without the trailing slash
        args=MultiDict(ex.query),
        headers=ex.request_headers,
        data=ex.request_body,
        content_type=ex.header("Content-Type") or "",
    )


def request_problems(ex: Exchange) -> list[str]:
    """What is wrong with the request as our client sent it."""
    if operation_id(ex.method, ex.path) is None:
        return [f"{ex.method} {ex.path} is not an operation of the Klaviyo API"]
    out = []
    try:
        openapi().validate_request(_request(ex))
    except Exception as exc:  # openapi-core raises a tree of validation errors
        out.append(f"request: {_errors(exc)}")
    if ex.header("revision") != revision():
        out.append(f"request: revision {ex.header('revision')!r}, description is {revision()!r}")
    if ex.request_body and _media_type(ex.header("Content-Type")) != JSON_API:
        out.append(f"request: Content-Type {ex.header('Content-Type')!r}, not {JSON_API}")
    return out


def response_problems(ex: Exchange) -> list[str]:
    """What is wrong with the answer, for the operation the request addressed."""
    if operation_id(ex.method, ex.path) is None:
        return [f"{ex.method} {ex.path} is not an operation of the Klaviyo API"]
    out = []
    response = MockResponse(
        ex.response_body,
        status_code=ex.status,
        headers=ex.response_headers,
        content_type=ex.response_header("Content-Type") or "",
    )
    try:
        openapi().validate_response(_request(ex), response)
    except Exception as exc:
        out.append(f"response: {_errors(exc)}")
    if ex.response_body and _media_type(ex.response_header("Content-Type")) != JSON_API:
        out.append(f"response: Content-Type {ex.response_header('Content-Type')!r}")
    if ex.status == 429:
        retry_after = ex.response_header("Retry-After") or ""
        if not retry_after.isdigit():
            out.append(f"response: 429 without integer Retry-After ({retry_after!r})")
    return out + _link_problems(ex)


def problems(ex: Exchange) -> list[str]:
    """Every disagreement between one exchange and the description (empty when it conforms)."""
    return request_problems(ex) + response_problems(ex)


def _link_problems(ex: Exchange) -> list[str]:
    """`links.next`/`prev`, when present, must be this path with a `page[cursor]`."""
    body = ex.json() if ex.status < 300 and ex.response_body else None
    links = body.get("links") if isinstance(body, dict) else None
    out = []
    for name in ("next", "prev"):
        url = (links or {}).get(name)
        if url is None:
            continue
        parts = urlsplit(url)
        if parts.path.rstrip("/") != ex.path.rstrip("/"):
            out.append(f"links.{name} points at {parts.path}, not {ex.path}")
        if not parse_qs(parts.query).get("page[cursor]"):
            out.append(f"links.{name} has no page[cursor]: {url}")
    return out
