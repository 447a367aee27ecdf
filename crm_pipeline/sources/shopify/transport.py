"""One GraphQL call through the SDK's session: timeouts, cost pacing, retries, error classes."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any, cast

import orjson
import shopify

from crm_pipeline.sources.errors import (
    BadRequest,
    RateLimited,
    RetriableSourceError,
    SourceError,
    Timeout,
)
from crm_pipeline.sources.http import error_for_status
from crm_pipeline.sources.shopify.base import _ClientBase

# the SDK keeps the active session in class and thread-local state: switch it under a lock
_SESSION_LOCK = threading.Lock()

_TRANSPORT_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    socket.timeout,
)


class _GraphQL(shopify.GraphQL):  # type: ignore[misc]
    """The SDK's GraphQL endpoint, with a socket timeout and without printing error bodies.

    `shopify.GraphQL.execute` calls `urlopen` with no timeout (a hung connection would block a
    run forever) and prints failed response bodies to stdout; the request itself is unchanged.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def execute(
        self, query: str, variables: dict[str, Any] | None = None, operation_name: str | None = None
    ) -> str:
        headers = self.merge_headers(
            {"Accept": "application/json", "Content-Type": "application/json"}, self.headers
        )
        data = {"query": query, "variables": variables, "operationName": operation_name}
        req = urllib.request.Request(self.endpoint, json.dumps(data).encode("utf-8"), headers)
        with urllib.request.urlopen(req, timeout=self.timeout) as response:
            return cast(bytes, response.read()).decode("utf-8")


class _Transport(_ClientBase):
    """`execute` of ShopifyClient: the SDK endpoint, paced by the last cost status seen."""

    def _endpoint(self) -> _GraphQL:
        with _SESSION_LOCK:
            shopify.ShopifyResource.activate_session(self.session)
            if self.api_url:
                shopify.ShopifyResource.set_site(f"{self.api_url}/admin/api/{self.api_version}")
            return _GraphQL(self.timeout)

    def _pace(self, cost: int) -> None:
        with self._bucket_lock:
            if self._bucket is None:
                return
            available, restore, at = self._bucket
        now = time.monotonic()
        available += (now - at) * restore
        if available < cost and restore > 0:
            time.sleep((cost - available) / restore)

    def _note_cost(self, payload: dict[str, Any], estimate: int) -> dict[str, Any] | None:
        cost = (payload.get("extensions") or {}).get("cost") or None
        status = (cost or {}).get("throttleStatus")
        # a throttled answer spent nothing (no actualQueryCost); no cost at all: our estimate
        spent = (cost.get("actualQueryCost") or 0) if cost else estimate
        self.usage.shopify(float(spent), (status or {}).get("restoreRate"))
        if status:
            with self._bucket_lock:
                self._bucket = (
                    float(status.get("currentlyAvailable", 0)),
                    float(status.get("restoreRate", 50)),
                    time.monotonic(),
                )
        return cost

    def execute(
        self, query: str, variables: dict[str, Any] | None, operation_name: str, *, cost: int = 10
    ) -> dict[str, Any]:
        """Run one GraphQL operation with the retry policy; returns `data`."""

        def attempt() -> dict[str, Any]:
            self._pace(cost)
            endpoint = self._endpoint()
            try:
                raw = endpoint.execute(query, variables, operation_name)
            except urllib.error.HTTPError as exc:
                body = exc.read()[:500].decode("utf-8", "replace")
                err = error_for_status(
                    exc.code, f"Shopify HTTP {exc.code}: {body}", exc.headers.get("Retry-After")
                )
                raise (err or SourceError(body, status=exc.code)) from exc
            except _TRANSPORT_ERRORS as exc:
                raise Timeout(f"Shopify request failed: {exc!r}") from exc
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise RetriableSourceError(f"Shopify sent invalid JSON: {raw[:200]!r}") from exc
            cost_info = self._note_cost(payload, cost)
            errors = payload.get("errors")
            if errors:
                codes = {(e.get("extensions") or {}).get("code") for e in errors}
                if "THROTTLED" in codes:
                    status = (cost_info or {}).get("throttleStatus") or {}
                    requested = (cost_info or {}).get("requestedQueryCost") or cost
                    restore = float(status.get("restoreRate") or 50)
                    missing = requested - float(status.get("currentlyAvailable") or 0)
                    raise RateLimited(
                        "Shopify GraphQL throttled", retry_after=max(0.0, missing / restore)
                    )
                if "INTERNAL_SERVER_ERROR" in codes:
                    raise RetriableSourceError(f"Shopify GraphQL error: {errors}")
                raise BadRequest(f"Shopify GraphQL {operation_name} failed: {errors}")
            return cast(dict[str, Any], payload.get("data") or {})

        return self.policy.call(attempt)
