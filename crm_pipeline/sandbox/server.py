"""The local Shopify Admin GraphQL + Klaviyo REST API server over a sandbox store directory.

It answers the request shapes our clients send through the real SDKs, in the real response
shapes, with the failure modes the real services have (cost throttling, 429s, 5xx, slow
predictive analytics, failed bulk operations), so the pipeline is exercised end to end without
credentials. The Shopify side executes GraphQL against Shopify's published schema
(`sandbox.shopify`), so it refuses whatever the real API would. Stores of millions of records
are served from byte-offset indexes (`store_index`), never loaded.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from crm_pipeline.sandbox.klaviyo import (
    _KLAVIYO_REVISION,
    KLAVIYO_MEDIA_TYPE,
    _klaviyo_error,
    handle_klaviyo_request,
)
from crm_pipeline.sandbox.klaviyo_profiles import ProfileLookup
from crm_pipeline.sandbox.reply import _Reply
from crm_pipeline.sandbox.shopify.endpoint import BAD_BODY, handle_graphql, known_version
from crm_pipeline.sandbox.shopify.nodes import gid
from crm_pipeline.sandbox.state import SandboxConfig, SandboxState
from crm_pipeline.sandbox.store import SandboxStore

log = logging.getLogger(__name__)


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
        headers = {"Content-Type": "application/json; charset=utf-8", **reply.headers}
        self.send_response(reply.status)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
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
            headers = {"Retry-After": "1.0"} if state.chance(0.5) else {}
            if klaviyo:  # Klaviyo always says when to come back, in whole seconds
                detail = "Request was throttled."
                body = _klaviyo_error(429, "throttled", detail, detail)
                return _Reply(429, body, {"Retry-After": "1"})
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
        if path.startswith("/api/"):
            self._klaviyo("POST", raw)
            return
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
        self._klaviyo("GET", b"")

    def do_PATCH(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        self._klaviyo("PATCH", self.rfile.read(length) if length else b"")

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        self._klaviyo("DELETE", self.rfile.read(length) if length else b"")

    def _klaviyo(self, method: str, raw: bytes) -> None:
        """A Klaviyo REST request: key, revision, injected faults, then the route."""
        parts = urlsplit(self.path)
        if not parts.path.startswith("/api/"):
            self._send(_Reply(404, {"errors": "Not Found"}))
            return
        self.state.count("klaviyo_requests")
        json_api = {"Content-Type": KLAVIYO_MEDIA_TYPE}
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Klaviyo-API-Key ") or len(auth) <= len("Klaviyo-API-Key "):
            detail = "Missing or invalid private key."
            title = "Authentication credentials were not provided."
            body = _klaviyo_error(401, "not_authenticated", title, detail)
            self._send(_Reply(401, body, json_api))
            return
        revision = self.headers.get("revision")
        if not revision or not _KLAVIYO_REVISION.match(revision):
            detail = "The revision header is required, as YYYY-MM-DD[.suffix]."
            body = _klaviyo_error(400, "invalid", "Invalid input.", detail)
            self._send(_Reply(400, body, json_api))
            return
        fault = self._chaos(klaviyo=True)
        if fault:
            fault.headers.update(json_api)
            self._send(fault)
            return
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        content_type = self.headers.get("Content-Type")
        self._send(
            handle_klaviyo_request(
                self.state, method, parts.path, params, raw, content_type, self.base_url
            )
        )

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

    def reload(self) -> None:
        """Index the store directory again, after it was rewritten (tests model a changing
        shop this way); bulk operations and webhook subscriptions are kept."""
        assert self.state is not None, "start the server first"
        self.state.store = SandboxStore(self.store_path)
        self.state.klaviyo_profile_lookup = ProfileLookup(self.state.store.profiles)
        self.state.klaviyo_writes.reload(self.state.store.profiles)

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
