"""The local Shopify Admin GraphQL + Klaviyo REST API server over a sandbox store directory.

It answers the request shapes our clients send through the real SDKs, in the real response
shapes, with the failure modes the real services have (cost throttling, 429s, 5xx, slow
predictive analytics, failed bulk operations), so the pipeline is exercised end to end without
credentials. The Shopify side executes GraphQL against Shopify's published schema
(`sandbox.shopify`), so it refuses whatever the real API would. Stores of millions of records
are served from byte-offset indexes (`store_index`), never loaded.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson

from crm_pipeline.sandbox.shopify.endpoint import BAD_BODY, handle_graphql, known_version
from crm_pipeline.sandbox.shopify.nodes import gid
from crm_pipeline.sandbox.state import SandboxConfig, SandboxState
from crm_pipeline.sandbox.store import SandboxStore
from crm_pipeline.sandbox.store_index import (
    JsonlIndex,
    safe_us,
    to_us,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Klaviyo REST
# ---------------------------------------------------------------------------------------------

_KLAVIYO_FILTER = re.compile(
    r"(greater-than|less-than|equals|greater-or-equal)\((\w+),\"?([^\")]*)\"?\)"
)


def _klaviyo_error(status: int, code: str, title: str, detail: str) -> dict:
    return {
        "errors": [
            {
                "id": str(uuid.uuid4()),
                "status": status,
                "code": code,
                "title": title,
                "detail": detail,
                "source": {"pointer": "/data/"},
            }
        ]
    }


def _klaviyo_cursor(pos: int) -> str:
    return base64.urlsafe_b64encode(f"bmV4dDo6{pos}".encode()).decode().rstrip("=")


def _klaviyo_pos(cursor: str | None) -> int:
    if not cursor:
        return 0
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        return int(base64.urlsafe_b64decode(padded).decode().removeprefix("bmV4dDo6"))
    except ValueError as exc:
        raise ValueError(f"Invalid page cursor {cursor!r}") from exc


def _klaviyo_page(
    index: JsonlIndex,
    params: dict[str, str],
    time_field: str,
    page_size: int,
    link: Callable[[dict[str, str]], str],
) -> tuple[list[tuple[int, dict]], str | None]:
    start, stop = 0, len(index)
    for op, fld, value in _KLAVIYO_FILTER.findall(params.get("filter", "")):
        if fld != time_field:
            continue
        us = to_us(value)
        if op == "greater-than":
            start = max(start, index.upper_bound(us))
        elif op == "greater-or-equal":
            start = max(start, index.lower_bound(us))
        elif op == "less-than":
            stop = min(stop, index.lower_bound(us))
    start = max(start, _klaviyo_pos(params.get("page[cursor]")))
    end = min(stop, start + page_size)
    records = list(index.iter_range(start, end))
    next_url = None
    if end < stop:
        next_url = link({**params, "page[cursor]": _klaviyo_cursor(end)})
    return records, next_url


class _Reply:
    """What a handler answers: status, JSON body or a file to stream, extra headers."""

    def __init__(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        file: Path | None = None,
    ) -> None:
        self.status, self.body, self.headers, self.file = status, body, headers or {}, file


def handle_klaviyo(state: SandboxState, path: str, params: dict[str, str], base_url: str) -> _Reply:
    store, cfg = state.store, state.config
    resource = path.rstrip("/").rsplit("/", 1)[-1]
    predictive = "predictive_analytics" in params.get("additional-fields[profile]", "")
    limiter = {
        "profiles": "profiles_predictive" if predictive else "profiles",
        "events": "events",
        "metrics": "metrics",
    }.get(resource)
    if limiter is None:
        return _Reply(404, _klaviyo_error(404, "not_found", "Not found.", f"No route {path}"))
    wait = state.klaviyo_admit(limiter)
    if wait:
        state.count("klaviyo_rate_limited")
        seconds = max(1, math.ceil(wait))
        detail = f"Request was throttled. Expected available in {seconds} second."
        body = _klaviyo_error(429, "throttled", "Request was throttled.", detail)
        return _Reply(429, body, {"Retry-After": str(seconds)})
    if predictive:
        rate = cfg.predictive_fault_rate
        rate = min(1.0, 2 * cfg.fault_rate) if rate is None else rate
        if state.chance(rate):
            state.count("klaviyo_predictive_503")
            detail = "Predictive analytics are temporarily unavailable."
            return _Reply(
                503, _klaviyo_error(503, "service_unavailable", "Service unavailable", detail)
            )

    def link(p: dict[str, str]) -> str:
        return f"{base_url}{path}?{urlencode(p)}"

    self_link = link(params) if params else f"{base_url}{path}"
    try:
        if resource == "metrics":
            data = [
                {**m, "links": {"self": f"{base_url}/api/metrics/{m['id']}/"}}
                for m in store.metrics
            ]
            return _Reply(
                200, {"data": data, "links": {"self": self_link, "next": None, "prev": None}}
            )
        if resource == "profiles":
            size = int(params.get("page[size]", 20))
            if not 1 <= size <= 100:
                detail = "Page size must be an integer between 1 and 100."
                return _Reply(400, _klaviyo_error(400, "invalid", "Invalid input.", detail))
            wanted = set(filter(None, params.get("additional-fields[profile]", "").split(",")))
            records, next_url = _klaviyo_page(store.profiles, params, "updated", size, link)
            data = []
            for _, rec in records:
                attrs = dict(rec.get("attributes") or {})
                for extra in ("subscriptions", "predictive_analytics"):
                    if extra not in wanted:
                        attrs.pop(extra, None)
                    else:
                        attrs.setdefault(extra, None)
                data.append(
                    {
                        "type": "profile",
                        "id": rec["id"],
                        "attributes": attrs,
                        "links": {"self": f"{base_url}/api/profiles/{rec['id']}/"},
                    }
                )
            links = {"self": self_link, "next": next_url, "prev": None}
            return _Reply(200, {"data": data, "links": links})
        # events
        size = int(params.get("page[size]", 200))
        if not 1 <= size <= 1000:
            detail = "Page size must be an integer between 1 and 1000."
            return _Reply(400, _klaviyo_error(400, "invalid", "Invalid input.", detail))
        index = store.events
        for op, fld, value in _KLAVIYO_FILTER.findall(params.get("filter", "")):
            if fld == "metric_id" and op == "equals":
                index = store.events_for_metric(store.metric_code.get(value, -2))
        records, next_url = _klaviyo_page(index, params, "datetime", size, link)
        includes = set(filter(None, params.get("include", "").split(",")))
        data, included, seen = [], [], set()
        for _, rec in records:
            attrs = dict(rec.get("attributes") or {})
            if "timestamp" not in attrs and attrs.get("datetime"):
                attrs["timestamp"] = safe_us(attrs["datetime"]) // 1_000_000
            data.append(
                {
                    **rec,
                    "attributes": attrs,
                    "links": {"self": f"{base_url}/api/events/{rec['id']}/"},
                }
            )
            rels = rec.get("relationships") or {}
            for kind in ("metric", "profile"):
                ref = (rels.get(kind) or {}).get("data") or {}
                if kind in includes and ref.get("id") and (kind, ref["id"]) not in seen:
                    seen.add((kind, ref["id"]))
                    if kind == "metric":
                        code = store.metric_code.get(ref["id"])
                        if code is not None:
                            included.append(store.metrics[code])
                    else:
                        included.append({"type": "profile", "id": ref["id"], "attributes": {}})
        body: dict[str, Any] = {
            "data": data,
            "links": {"self": self_link, "next": next_url, "prev": None},
        }
        if includes:
            body["included"] = included
        return _Reply(200, body)
    except ValueError as exc:
        return _Reply(400, _klaviyo_error(400, "invalid", "Invalid input.", str(exc)))


# ---------------------------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------------------------

_GRAPHQL_PATH = re.compile(r"^/admin/api/(\d{4}-\d{2}|unstable)/graphql\.json$")
_BULK_PATH = re.compile(r"^/bulk/(\d+)\.jsonl$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "crm-sandbox/1"
    state: SandboxState  # set on the subclass built per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    @property
    def base_url(self) -> str:
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        return f"http://{host}"

    def _send(self, reply: _Reply) -> None:
        data = b"" if reply.body is None else orjson.dumps(reply.body)
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _chaos(self, klaviyo: bool) -> _Reply | None:
        """Latency, injected 429s and 5xx, decided before any real work."""
        cfg, state = self.state.config, self.state
        if cfg.latency > 0:
            time.sleep(cfg.latency)
        if state.chance(cfg.rate_limit_429):
            state.count("injected_429")
            headers = {"Retry-After": "1" if klaviyo else "1.0"} if state.chance(0.5) else {}
            if klaviyo:
                detail = "Request was throttled."
                return _Reply(429, _klaviyo_error(429, "throttled", detail, detail), headers)
            msg = (
                "Exceeded 2 calls per second for api client. "
                "Reduce request rates to resume uninterrupted service."
            )
            return _Reply(429, {"errors": msg}, headers)
        if state.chance(cfg.fault_rate):
            state.count("injected_5xx")
            with state.lock:
                status = state.rng.choice([500, 502, 503, 504])
            if klaviyo:
                return _Reply(
                    status,
                    _klaviyo_error(status, "error", "A server error occurred.", "Injected fault"),
                )
            return _Reply(status, {"errors": "Internal Server Error"})
        return None

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        graphql = _GRAPHQL_PATH.match(path)
        if not graphql or not known_version(graphql.group(1)):
            self._send(_Reply(404, {"errors": "Not Found"}))
            return
        self.state.count("shopify_requests")
        if not self.headers.get("X-Shopify-Access-Token"):
            msg = "[API] Invalid API key or access token (unrecognized login or wrong password)"
            self._send(_Reply(401, {"errors": msg}))
            return
        fault = self._chaos(klaviyo=False)
        if fault:
            self._send(fault)
            return
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._send(_Reply(400, BAD_BODY))
            return
        self._send(_Reply(*handle_graphql(self.state, graphql.group(1), body, self.base_url)))

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        parts = urlsplit(self.path)
        bulk = _BULK_PATH.match(parts.path)
        if bulk:
            self._send_bulk_file(bulk.group(1))
            return
        if parts.path in ("/healthz", "/"):
            self._send(_Reply(200, {"ok": True}))
            return
        if not parts.path.startswith("/api/"):
            self._send(_Reply(404, {"errors": "Not Found"}))
            return
        self.state.count("klaviyo_requests")
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Klaviyo-API-Key ") or len(auth) <= len("Klaviyo-API-Key "):
            detail = "Missing or invalid private key."
            self._send(
                _Reply(
                    401,
                    _klaviyo_error(
                        401,
                        "not_authenticated",
                        "Authentication credentials were not provided.",
                        detail,
                    ),
                )
            )
            return
        if not self.headers.get("revision"):
            detail = "The revision header is required."
            self._send(_Reply(400, _klaviyo_error(400, "invalid", "Invalid input.", detail)))
            return
        fault = self._chaos(klaviyo=True)
        if fault:
            self._send(fault)
            return
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self._send(handle_klaviyo(self.state, parts.path, params, self.base_url))

    def _send_bulk_file(self, number: str) -> None:
        """Stream a bulk result (supports `Range: bytes=N-` so a client can resume)."""
        op = self.state.shopify.bulk_ops.get(gid("BulkOperation", number))
        if op is None or op.file is None or op.status not in ("COMPLETED", "FAILED"):
            self._send(_Reply(404, {"errors": "Not Found"}))
            return
        fault = self._chaos(klaviyo=False)
        if fault and fault.status >= 500:
            self._send(fault)
            return
        size = op.file.stat().st_size
        start = 0
        m = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        if m:
            start = min(int(m.group(1)), size)
        self.send_response(206 if m else 200)
        self.send_header("Content-Type", "application/jsonl")
        self.send_header("Content-Length", str(size - start))
        if m:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        with op.file.open("rb") as fh:
            fh.seek(start)
            shutil.copyfileobj(fh, self.wfile, 1 << 16)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def _make_server(state: SandboxState, host: str, port: int) -> _Server:
    handler = type("SandboxHandler", (_Handler,), {"state": state})
    return _Server((host, port), handler)


def serve(
    store: Path,
    port: int,
    host: str = "127.0.0.1",
    *,
    fault_rate: float = 0.0,
    latency: float = 0.0,
    throttle: bool = True,
    rate_limit_429: float = 0.0,
    seed: int = 0,
    bulk_fail_rate: float = 0.0,
) -> None:
    """Serve `store` on host:port until interrupted (the `sandbox serve` command)."""
    config = SandboxConfig(
        fault_rate=fault_rate,
        latency=latency,
        throttle=throttle,
        rate_limit_429=rate_limit_429,
        seed=seed,
        bulk_fail_rate=bulk_fail_rate,
    )
    state = SandboxState(SandboxStore(Path(store)), config)
    server = _make_server(state, host, port)
    log.info("sandbox serving %s on http://%s:%d", store, host, port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        state.close()


class SandboxServer:
    """`serve` on a free port in a background thread, for tests and `crm-pipeline demo`.

    >>> with SandboxServer(store_dir, fault_rate=0.2) as sandbox:
    ...     ShopifyClient("sandbox", "token", api_url=sandbox.url)
    """

    def __init__(self, store: Path, port: int = 0, host: str = "127.0.0.1", **config: Any) -> None:
        self.store_path = Path(store)
        self.host, self.port = host, port
        self.config = SandboxConfig(**config)
        self.state: SandboxState | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SandboxServer:
        self.state = SandboxState(SandboxStore(self.store_path), self.config)
        self._server = _make_server(self.state, self.host, self.port)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="crm-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self.state is not None:
            self.state.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
