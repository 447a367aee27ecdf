"""The local Shopify Admin GraphQL + Klaviyo REST API server over a sandbox store directory.

It answers the request shapes our clients send through the real SDKs, in the real response
shapes, with the failure modes the real services have (cost throttling, 429s, 5xx, slow
predictive analytics, failed bulk operations), so the pipeline is exercised end to end without
credentials. It is not a GraphQL engine: operations are recognised by name (see `_GRAPHQL_OPS`).
Stores of millions of records are served from byte-offset indexes (`store_index`), never loaded.
"""

from __future__ import annotations

import base64
import functools
import logging
import math
import os
import random
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
import orjson

from crm_pipeline.process_pool import spawn_pool
from crm_pipeline.sandbox.klaviyo_profiles import ProfileLookup
from crm_pipeline.sandbox.klaviyo_webhooks import KlaviyoApiError, KlaviyoWebhooks
from crm_pipeline.sandbox.store_index import (
    MIN_US,
    JsonlIndex,
    build_index,
    iso_utc,
    read_ids,
    safe_us,
    to_us,
)

log = logging.getLogger(__name__)

SHOPIFY_MAX_COST = 1000
SHOPIFY_BUCKET = 2000.0
SHOPIFY_RESTORE_RATE = 100.0


# ---------------------------------------------------------------------------------------------
# Store: indexes over the JSONL files
# ---------------------------------------------------------------------------------------------


def _shopify_key(rec: dict) -> tuple[int, int]:
    return safe_us(rec.get("updated_at"), rec.get("created_at")), int(rec["id"])


def _int(value: Any) -> Any:
    """An int when it is one; otherwise the dirty value itself, for validation downstream."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return value


class SandboxStore:
    """Indexes of one store directory (CONTRACT.md section 5), built once at startup."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        started = time.monotonic()
        shop = self.root / "shopify"
        kla = self.root / "klaviyo"
        self.customers = self._shopify_index(shop / "customers.jsonl")
        deleted = {int(i) for i in read_ids(shop / "deleted_customers.jsonl") if i is not None}
        if deleted and len(self.customers):
            keep = ~np.isin(self.customers.tags, np.fromiter(deleted, dtype=np.int64))
            self.customers = self.customers.subset(keep)
        self.orders = self._shopify_index(shop / "orders.jsonl")

        self.metrics: list[dict] = []
        metrics_path = kla / "metrics.jsonl"
        if metrics_path.exists():
            with metrics_path.open("rb") as fh:
                self.metrics = [orjson.loads(line) for line in fh if line.strip()]
        self.metric_code = {m["id"]: i for i, m in enumerate(self.metrics)}

        self.profiles = self._klaviyo_index(
            kla / "profiles.jsonl", lambda r: (safe_us(r["attributes"].get("updated")), 0)
        )

        def event_key(rec: dict) -> tuple[int, int]:
            metric_id = ((rec.get("relationships") or {}).get("metric") or {}).get("data") or {}
            code = self.metric_code.get(metric_id.get("id"), -1)
            return safe_us(rec["attributes"].get("datetime")), code

        self.events = self._klaviyo_index(kla / "events.jsonl", event_key)
        self._events_by_metric: dict[int, JsonlIndex] = {}
        self._lock = threading.Lock()
        log.info(
            "sandbox store %s indexed in %.1fs: %d customers, %d orders, %d profiles, %d events",
            self.root,
            time.monotonic() - started,
            len(self.customers),
            len(self.orders),
            len(self.profiles),
            len(self.events),
        )

    @staticmethod
    def _empty(path: Path) -> JsonlIndex:
        z64 = np.zeros(0, dtype=np.int64)
        return JsonlIndex(path, z64, z64, np.zeros(0, dtype=np.int32), z64)

    def _shopify_index(self, path: Path) -> JsonlIndex:
        return build_index(path, _shopify_key) if path.exists() else self._empty(path)

    def _klaviyo_index(self, path: Path, key: Callable[[dict], tuple[int, int]]) -> JsonlIndex:
        return build_index(path, key) if path.exists() else self._empty(path)

    def events_for_metric(self, code: int) -> JsonlIndex:
        with self._lock:
            if code not in self._events_by_metric:
                self._events_by_metric[code] = self.events.subset(self.events.tags == code)
            return self._events_by_metric[code]


# ---------------------------------------------------------------------------------------------
# REST store record -> Shopify GraphQL node
# ---------------------------------------------------------------------------------------------


def gid(kind: str, value: Any, model: str | None = None) -> str | None:
    if value is None:
        return None
    suffix = f"?model_name={model}" if model else ""
    return f"gid://shopify/{kind}/{value}{suffix}"


@functools.lru_cache(maxsize=1024)
def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _upper(value: Any) -> str | None:
    return str(value).upper() if value not in (None, "") else None


def _money(value: Any) -> str:
    if value in (None, ""):
        return "0.0"
    try:
        return str(Decimal(str(value)))
    except InvalidOperation:
        return str(value)


def _tags(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(t) for t in value]
    return [t.strip() for t in str(value or "").split(",") if t.strip()]


def _consent(value: dict | None, sms: bool = False) -> dict | None:
    if not value:
        return None
    node = {
        "marketingState": _upper(value.get("state")),
        "marketingOptInLevel": _upper(value.get("opt_in_level")),
        "consentUpdatedAt": iso_utc(value.get("consent_updated_at")),
    }
    if sms:
        node["consentCollectedFrom"] = _upper(value.get("consent_collected_from"))
    return node


def _address(addr: dict | None) -> dict | None:
    if not addr:
        return None
    node: dict[str, Any] = {}
    for key, value in addr.items():
        if key in ("customer_id", "default"):
            continue  # derivable from the parent customer and its defaultAddress
        if key == "id":
            node["id"] = gid("MailingAddress", value, "CustomerAddress")
        elif key == "country_code":
            node["countryCodeV2"] = value
        else:
            node[_camel(key)] = value
    return node


def customer_node(c: dict) -> dict:
    """A REST customer line as the GraphQL `Customer` our queries select."""
    currency = c.get("currency") or "USD"
    return {
        "id": gid("Customer", c["id"]),
        "legacyResourceId": str(c["id"]),
        "email": c.get("email"),
        "firstName": c.get("first_name"),
        "lastName": c.get("last_name"),
        "phone": c.get("phone"),
        "state": _upper(c.get("state")) or "DISABLED",
        "tags": _tags(c.get("tags")),
        "note": c.get("note"),
        "verifiedEmail": bool(c.get("verified_email")),
        "taxExempt": bool(c.get("tax_exempt")),
        "emailMarketingConsent": _consent(c.get("email_marketing_consent")),
        "smsMarketingConsent": _consent(c.get("sms_marketing_consent"), sms=True),
        "addresses": [_address(a) for a in c.get("addresses") or []],
        "defaultAddress": _address(c.get("default_address")),
        "createdAt": iso_utc(c.get("created_at")),
        "updatedAt": iso_utc(c.get("updated_at")),
        "numberOfOrders": str(c.get("orders_count") or 0),
        "multipassIdentifier": c.get("multipass_identifier"),
        "taxExemptions": [_upper(t) for t in c.get("tax_exemptions") or []],
        "lastOrder": {"id": gid("Order", c["last_order_id"])} if c.get("last_order_id") else None,
        "amountSpent": {"amount": _money(c.get("total_spent")), "currencyCode": currency},
    }


_FULFILLMENT = {None: "UNFULFILLED", "": "UNFULFILLED", "partial": "PARTIALLY_FULFILLED"}


def _line_item_id(order_id: int, index: int, li: dict) -> int:
    return int(li["id"]) if li.get("id") is not None else int(order_id) * 1000 + index + 1


def order_parts(o: dict) -> tuple[dict, list[dict], list[tuple[str, list[dict]]]]:
    """A REST order as (Order node, LineItem nodes, [(refund gid, RefundLineItem nodes)]).

    Line items and refund line items are connections, so they are separate lines in bulk
    results and `{nodes: [...]}` in paginated ones; refunds are a plain list on Order.
    """
    oid = int(o["id"])
    currency = o.get("currency") or "USD"

    def money(amount: Any) -> dict:
        return {"shopMoney": {"amount": _money(amount), "currencyCode": currency}}

    items = []
    for i, li in enumerate(o.get("line_items") or []):
        pid = li.get("product_id")
        items.append(
            {
                "id": gid("LineItem", _line_item_id(oid, i, li)),
                "title": li.get("title"),
                "vendor": li.get("vendor"),
                "quantity": _int(li.get("quantity")),
                "sku": li.get("sku"),
                "product": (
                    {"id": gid("Product", pid), "productType": li.get("product_type")}
                    if pid is not None
                    else None
                ),
                "originalUnitPriceSet": money(li.get("price")),
            }
        )
    refunds, refund_children = [], []
    for i, r in enumerate(o.get("refunds") or []):
        rid = gid("Refund", r.get("id") if r.get("id") is not None else oid * 100 + i + 1)
        total = Decimal(0)
        for t in r.get("transactions") or []:
            if (t.get("kind") or "refund") == "refund" and t.get("status", "success") == "success":
                try:
                    total += Decimal(str(t.get("amount") or 0))
                except InvalidOperation:
                    pass  # a dirty amount counts as nothing refunded
        refunds.append(
            {
                "id": rid,
                "createdAt": iso_utc(r.get("created_at")),
                "note": r.get("note"),
                "totalRefundedSet": money(total),
            }
        )
        refund_children.append(
            (
                rid,
                [
                    {
                        "lineItem": {"id": gid("LineItem", rli.get("line_item_id"))},
                        "quantity": _int(rli.get("quantity")),
                    }
                    for rli in r.get("refund_line_items") or []
                ],
            )
        )
    customer = o.get("customer") or {}
    fulfillment = o.get("fulfillment_status")
    node = {
        "id": gid("Order", oid),
        "legacyResourceId": str(oid),
        "name": o.get("name") or f"#{o.get('order_number') or oid}",
        "customer": {"id": gid("Customer", customer["id"])} if customer.get("id") else None,
        "email": o.get("email"),
        "createdAt": iso_utc(o.get("created_at")),
        "updatedAt": iso_utc(o.get("updated_at")),
        "processedAt": iso_utc(o.get("processed_at") or o.get("created_at")),
        "cancelledAt": iso_utc(o.get("cancelled_at")),
        "cancelReason": _upper(o.get("cancel_reason")),
        "displayFinancialStatus": _upper(o.get("financial_status")),
        "displayFulfillmentStatus": _FULFILLMENT.get(fulfillment) or _upper(fulfillment),
        "currencyCode": currency,
        "totalPriceSet": money(o.get("total_price")),
        "subtotalPriceSet": money(o.get("subtotal_price")),
        "totalTaxSet": money(o.get("total_tax")),
        "sourceName": o.get("source_name"),
        "tags": _tags(o.get("tags")),
        "refunds": refunds,
    }
    return node, items, refund_children


def order_node_paginated(o: dict, line_items_first: int) -> dict:
    node, items, refund_children = order_parts(o)
    shown = items[:line_items_first]
    node["lineItems"] = _connection_nodes(shown, len(items) > len(shown), 0)
    for refund, (_, children) in zip(node["refunds"], refund_children, strict=True):
        refund["refundLineItems"] = {"nodes": children}
    return node


def _connection_nodes(nodes: list[dict], has_next: bool, offset: int) -> dict:
    end = _offset_cursor(offset + len(nodes) - 1) if nodes else None
    return {"nodes": nodes, "pageInfo": {"hasNextPage": has_next, "endCursor": end}}


def _offset_cursor(offset: int) -> str:
    return base64.b64encode(orjson.dumps({"offset": offset})).decode()


def _decode_cursor(cursor: str | None) -> dict:
    if not cursor:
        return {}
    try:
        return orjson.loads(base64.b64decode(cursor))
    except ValueError as exc:
        raise GraphQLUserError(f"Invalid cursor for current pagination sort: {cursor}") from exc


# ---------------------------------------------------------------------------------------------
# Server state: fault injection, throttling buckets, bulk operations, webhooks
# ---------------------------------------------------------------------------------------------


class GraphQLUserError(Exception):
    """A GraphQL-level error answered as 200 with `errors` (what Shopify does)."""

    def __init__(self, message: str, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BulkOperation:
    id: str
    kind: str  # customers | orders
    query_filter: str | None
    status: str = "CREATED"
    error_code: str | None = None
    object_count: int = 0
    root_object_count: int = 0
    file: Path | None = None
    partial: bool = False
    created_at: float = field(default_factory=time.time)
    completed_at: float | None = None


class _SlidingWindow:
    """Counts requests in a trailing window; answers how long until one more is allowed."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit, self.seconds = limit, seconds
        self.hits: deque[float] = deque()

    def admit(self, now: float) -> float:
        while self.hits and now - self.hits[0] >= self.seconds:
            self.hits.popleft()
        if len(self.hits) >= self.limit:
            return self.seconds - (now - self.hits[0])
        self.hits.append(now)
        return 0.0


# (burst per second, steady per minute), from Klaviyo's published limits
KLAVIYO_LIMITS = {
    "profiles": (75, 700),
    "profiles_predictive": (10, 150),
    "events": (350, 3500),
    "metrics": (10, 150),
    "webhooks": (1, 15),
}


@dataclass
class SandboxConfig:
    fault_rate: float = 0.0
    latency: float = 0.0
    throttle: bool = True
    rate_limit_429: float = 0.0
    seed: int = 0
    bulk_fail_rate: float = 0.0
    predictive_fault_rate: float | None = None  # default: twice fault_rate
    klaviyo_rate_limits: bool = True
    bulk_seconds: float = 0.3  # minimum RUNNING time, so clients really poll
    # records left out at the end of every customers bulk result and profile listing, answered
    # as complete: the silently short pull a reconcile must not take for deletions; with
    # `drop_counted` off, customersCount leaves them out too (a lagging search index)
    drop_last: int = 0
    drop_counted: bool = True


class SandboxState:
    """Everything mutable the handlers share; one lock guards the small shared counters."""

    def __init__(self, store: SandboxStore, config: SandboxConfig) -> None:
        self.store = store
        self.config = config
        self.rng = random.Random(config.seed)
        self.lock = threading.Lock()
        self.bucket = SHOPIFY_BUCKET
        self.bucket_at = time.monotonic()
        self.bulk_ops: dict[str, BulkOperation] = {}
        self.bulk_seq = 0
        self.current_bulk = ""
        self.bulk_dir = Path(tempfile.mkdtemp(prefix="crm-sandbox-bulk-"))
        self._render_pool: ProcessPoolExecutor | None = None
        self.webhooks: dict[str, dict] = {}
        self.webhook_seq = 0
        self.klaviyo_webhooks = KlaviyoWebhooks()
        self.klaviyo_profile_lookup = ProfileLookup(store.profiles)
        self.windows = {
            name: (_SlidingWindow(burst, 1.0), _SlidingWindow(steady, 60.0))
            for name, (burst, steady) in KLAVIYO_LIMITS.items()
        }
        self.counters: dict[str, int] = {}

    def count(self, name: str) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    def chance(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self.lock:
            return self.rng.random() < rate

    # Shopify's leaky bucket: requested cost is taken up front, the unused part refunded
    def _refill(self) -> None:
        now = time.monotonic()
        self.bucket = min(
            SHOPIFY_BUCKET, self.bucket + (now - self.bucket_at) * SHOPIFY_RESTORE_RATE
        )
        self.bucket_at = now

    def take_cost(self, requested: int) -> bool:
        with self.lock:
            self._refill()
            if self.config.throttle and self.bucket < requested:
                return False
            self.bucket -= requested
            return True

    def refund_cost(self, amount: int) -> float:
        with self.lock:
            self._refill()
            self.bucket = min(SHOPIFY_BUCKET, self.bucket + max(0, amount))
            return self.bucket

    def available(self) -> float:
        with self.lock:
            self._refill()
            return self.bucket

    def klaviyo_admit(self, name: str) -> float:
        if not self.config.klaviyo_rate_limits:
            return 0.0
        with self.lock:
            now = time.monotonic()
            burst, steady = self.windows[name]
            wait = burst.admit(now)
            if wait:
                return wait
            wait = steady.admit(now)
            if wait:
                burst.hits.pop()  # the request was refused: it must not count in either window
            return wait

    def render_pool(self) -> ProcessPoolExecutor:
        """Processes that render big bulk results, started on first use."""
        with self.lock:
            if self._render_pool is None:
                self._render_pool = spawn_pool(_render_processes())
            return self._render_pool

    def close(self) -> None:
        if self._render_pool is not None:
            self._render_pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.bulk_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Shopify GraphQL operations
# ---------------------------------------------------------------------------------------------

_UPDATED_FILTER = re.compile(r"updated_at\s*:\s*(>=|>|<=|<)?\s*['\"]?([0-9T:\-+.Z ]+?)['\"]?(\s|$)")


def _parse_search(query: str | None) -> tuple[int, int | None]:
    """Shopify search syntax -> (lower, upper) bounds in us; `>` acts like `>=` as in Shopify."""
    lower, upper = MIN_US, None
    for m in _UPDATED_FILTER.finditer(query or ""):
        op, value = m.group(1) or ">=", m.group(2).strip()
        us = to_us(value)
        if op.startswith(">"):
            lower = max(lower, us)
        else:
            upper = us if op == "<=" else us - 1
    return lower, upper


def _range(index: JsonlIndex, search: str | None) -> tuple[int, int]:
    lower, upper = _parse_search(search)
    start = index.lower_bound(lower) if lower != MIN_US else 0
    stop = index.upper_bound(upper) if upper is not None else len(index)
    return start, stop


def _shopify_cursor(index: JsonlIndex, pos: int) -> str:
    # real Shopify cursors are base64 JSON of the sort value and the id
    key = int(index.keys[pos])
    return base64.b64encode(
        orjson.dumps({"last_id": int(index.tags[pos]), "last_value": key})
    ).decode()


def _after(index: JsonlIndex, cursor: str | None) -> int:
    c = _decode_cursor(cursor)
    if not c:
        return 0
    try:
        key, last_id = int(c["last_value"]), int(c["last_id"])
    except (KeyError, TypeError, ValueError) as exc:
        raise GraphQLUserError(f"Invalid cursor for current pagination sort: {cursor}") from exc
    lo, hi = index.lower_bound(key), index.upper_bound(key)
    hits = np.nonzero(index.tags[lo:hi] == last_id)[0]
    return lo + int(hits[0]) + 1 if len(hits) else hi


def _page(index: JsonlIndex, v: dict, make: Callable[[dict], dict]) -> tuple[dict, int]:
    first = int(v.get("first") or 50)
    if not 0 < first <= 250:
        raise GraphQLUserError("The `first` argument must be between 1 and 250.")
    start, stop = _range(index, v.get("query"))
    start = max(start, _after(index, v.get("after")))
    end = min(stop, start + first)
    edges = [
        {"cursor": _shopify_cursor(index, pos), "node": make(rec)}
        for pos, rec in index.iter_range(start, end)
    ]
    page_info = {
        "hasNextPage": end < stop,
        "hasPreviousPage": start > 0,
        "startCursor": edges[0]["cursor"] if edges else None,
        "endCursor": edges[-1]["cursor"] if edges else None,
    }
    return {"edges": edges, "pageInfo": page_info}, len(edges)


def _op_customers(state: SandboxState, v: dict, ctx: dict) -> tuple[dict, int, int]:
    first = int(v.get("first") or 50)
    conn, n = _page(state.store.customers, v, customer_node)
    return {"customers": conn}, 2 + first * 4, 2 + n * 4


def _order_cost(first: int, line_items: int) -> int:
    return 2 + first * (6 + 2 + line_items * 2 + 5)


def _op_orders(state: SandboxState, v: dict, ctx: dict) -> tuple[dict, int, int]:
    first = int(v.get("first") or 50)
    li_first = int(v.get("lineItemsFirst") or 50)
    conn, n = _page(state.store.orders, v, lambda o: order_node_paginated(o, li_first))
    actual = 2 + sum(6 + 2 + len(e["node"]["lineItems"]["nodes"]) * 2 + 5 for e in conn["edges"])
    return {"orders": conn}, _order_cost(first, li_first), actual


def _find_by_id(index: JsonlIndex, numeric_id: int) -> dict | None:
    hits = np.nonzero(index.tags == numeric_id)[0]
    return index.read(int(hits[0])) if len(hits) else None


def _numeric(g: str | None) -> int:
    try:
        return int(str(g).rsplit("/", 1)[-1].split("?")[0])
    except ValueError as exc:
        raise GraphQLUserError(f"Invalid global id '{g}'") from exc


def _op_order_line_items(state: SandboxState, v: dict, ctx: dict) -> tuple[dict, int, int]:
    first = int(v.get("first") or 250)
    order = _find_by_id(state.store.orders, _numeric(v.get("id")))
    if order is None:
        return {"node": None}, 3, 1
    _, items, _ = order_parts(order)
    offset = int(_decode_cursor(v.get("after")).get("offset", -1)) + 1
    shown = items[offset : offset + first]
    conn = _connection_nodes(shown, offset + len(shown) < len(items), offset)
    return {"node": {"id": v["id"], "lineItems": conn}}, 3 + first * 2, 3 + len(shown) * 2


def _bulk_node(state: SandboxState, op: BulkOperation | None, base_url: str) -> dict | None:
    if op is None:
        return None
    url = f"{base_url}/bulk/{_numeric(op.id)}.jsonl"
    done = op.status == "COMPLETED"
    return {
        "__typename": "BulkOperation",
        "id": op.id,
        "status": op.status,
        "errorCode": op.error_code,
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(op.created_at)),
        "completedAt": (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(op.completed_at))
            if op.completed_at
            else None
        ),
        "objectCount": str(op.object_count),
        "rootObjectCount": str(op.root_object_count),
        "fileSize": str(op.file.stat().st_size) if done and op.file else None,
        "url": url if done and op.object_count else None,
        "partialDataUrl": url if op.partial else None,
        "query": None,
    }


_BULK_KIND = re.compile(r"\{\s*(customers|orders)\s*[({]")
_BULK_SEARCH = re.compile(r"query\s*:\s*\"((?:[^\"\\]|\\.)*)\"")


def _op_bulk_run(state: SandboxState, v: dict, ctx: dict) -> tuple[dict, int, int]:
    text = v.get("query") or ""
    m = _BULK_KIND.search(text)
    if not m:
        errors = [
            {"field": ["query"], "message": "Bulk queries must contain at least one connection."}
        ]
        return {"bulkOperationRunQuery": {"bulkOperation": None, "userErrors": errors}}, 10, 10
    search = _BULK_SEARCH.search(text)
    with state.lock:
        running = [o for o in state.bulk_ops.values() if o.status in ("CREATED", "RUNNING")]
        if running:
            msg = (
                "A bulk query operation for this app and shop is already in progress: "
                f"{running[0].id}."
            )
            errors = [{"field": None, "message": msg}]
            return {"bulkOperationRunQuery": {"bulkOperation": None, "userErrors": errors}}, 10, 10
        state.bulk_seq += 1
        op = BulkOperation(
            id=gid("BulkOperation", 1000 + state.bulk_seq),
            kind=m.group(1),
            query_filter=search.group(1).replace('\\"', '"') if search else None,
        )
        state.bulk_ops[op.id] = op
        state.current_bulk = op.id
        # result files are big (GBs for a 1M store): keep only the previous op's for late readers
        finished = [o for o in state.bulk_ops.values() if o.file is not None]
        for old in finished[:-1]:
            old.file.unlink(missing_ok=True)
            old.file = None
    payload = {"bulkOperation": {"id": op.id, "status": op.status}, "userErrors": []}
    threading.Thread(target=_run_bulk, args=(state, op), daemon=True, name=op.id).start()
    return {"bulkOperationRunQuery": payload}, 10, 10


def _record_lines(kind: str, rec: dict) -> Iterator[tuple[bool, bytes]]:
    """(is_root, JSONL line) of one store record in the real bulk format: children follow
    their parent."""
    if kind == "customers":
        yield True, orjson.dumps(customer_node(rec))
        return
    node, items, refund_children = order_parts(rec)
    for refund in node["refunds"]:
        refund.pop("refundLineItems", None)
    yield True, orjson.dumps(node)
    for item in items:
        yield False, orjson.dumps({**item, "__parentId": node["id"]})
    for refund_id, children in refund_children:
        for child in children:
            yield False, orjson.dumps({**child, "__parentId": refund_id})


def _render_part(
    kind: str, source: str, offsets: np.ndarray, lengths: np.ndarray, out: str
) -> tuple[int, int]:
    """Render the store records at `offsets` of `source` as bulk lines into `out`; returns
    (root objects, objects). Module-level: it also runs in the render processes."""
    roots = objects = 0
    with open(out, "wb") as fh:
        if not len(offsets):  # nothing matched (the store file may not even exist)
            return 0, 0
        with open(source, "rb") as src:
            fd = src.fileno()
            for offset, length in zip(offsets.tolist(), lengths.tolist(), strict=True):
                record = orjson.loads(os.pread(fd, length, offset))
                for is_root, line in _record_lines(kind, record):
                    roots += is_root
                    objects += 1
                    fh.write(line + b"\n")
    return roots, objects


# Results of at least this many records are rendered by processes, one slice each: on a 1M
# store one Python thread took a minute, time the client only waits.
_PARALLEL_RENDER_MIN = 20_000


def _render_processes() -> int:
    return min(4, os.cpu_count() or 1)


def _run_bulk(state: SandboxState, op: BulkOperation) -> None:
    started = time.monotonic()
    op.status = "RUNNING"
    fail = state.chance(state.config.bulk_fail_rate)
    path = state.bulk_dir / f"{_numeric(op.id)}.jsonl"
    try:
        index = state.store.customers if op.kind == "customers" else state.store.orders
        start, stop = _range(index, op.query_filter)
        if op.kind == "customers":
            stop = max(start, stop - state.config.drop_last)
        if fail:  # a failed operation leaves a partial file of about half the objects
            stop = start + (stop - start) // 2
        workers = _render_processes()
        if stop - start < _PARALLEL_RENDER_MIN or workers < 2:
            roots, objects = _render_part(
                op.kind, str(index.path), index.offsets[start:stop], index.lengths[start:stop],
                str(path),
            )  # fmt: skip
        else:
            roots, objects = _render_parallel(state, op, index, start, stop, path, workers)
        op.root_object_count, op.object_count = roots, objects
        op.file = path
        remaining = state.config.bulk_seconds - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        if fail:
            op.status, op.error_code, op.partial = "FAILED", "INTERNAL_SERVER_ERROR", True
        else:
            op.status = "COMPLETED"
    except Exception:  # the op must end FAILED, as Shopify's would, whatever broke
        log.exception("bulk operation %s failed", op.id)
        op.status, op.error_code = "FAILED", "INTERNAL_SERVER_ERROR"
    op.completed_at = time.time()


def _render_parallel(
    state: SandboxState,
    op: BulkOperation,
    index: JsonlIndex,
    start: int,
    stop: int,
    path: Path,
    workers: int,
) -> tuple[int, int]:
    """Render contiguous slices in parallel, then concatenate them in order."""
    bounds = np.linspace(start, stop, workers + 1).astype(int)
    parts = [path.with_suffix(f".part{i}") for i in range(workers)]
    jobs = [
        state.render_pool().submit(
            _render_part,
            op.kind,
            str(index.path),
            index.offsets[a:b],
            index.lengths[a:b],
            str(part),
        )  # fmt: skip
        for (a, b), part in zip(zip(bounds[:-1], bounds[1:], strict=True), parts, strict=True)
    ]
    counts = [job.result() for job in jobs]
    with path.open("wb") as fh:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)
            part.unlink()
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def _op_bulk_current(state: SandboxState, v: dict, ctx: dict) -> tuple[dict, int, int]:
    op = state.bulk_ops.get(state.current_bulk)
    return {"currentBulkOperation": _bulk_node(state, op, ctx["base_url"])}, 1, 1


def _op_node(state: SandboxState, v: dict, ctx: dict) -> tuple[dict, int, int]:
    op = state.bulk_ops.get(v.get("id") or "")
    return {"node": _bulk_node(state, op, ctx["base_url"])}, 1, 1


def _op_customer_nodes(state: SandboxState, v: dict, ctx: dict) -> tuple[dict, int, int]:
    """`nodes(ids:)` for customers: null for an id the store does not have (or deleted)."""
    ids = v.get("ids")
    if not isinstance(ids, list) or len(ids) > 250:
        raise GraphQLUserError("ids must be a list of at most 250 global ids")
    out: list[dict | None] = []
    for g in ids:
        rec = None
        if "/Customer/" in str(g):
            rec = _find_by_id(state.store.customers, _numeric(g))
        out.append(
            None
            if rec is None
            else {"id": gid("Customer", rec["id"]), "updatedAt": iso_utc(rec.get("updated_at"))}
        )
    return {"nodes": out}, 1 + len(ids), 1 + sum(n is not None for n in out)


def _op_customers_count(state: SandboxState, v: dict, ctx: dict) -> tuple[dict, int, int]:
    count = len(state.store.customers)
    if not state.config.drop_counted:
        count = max(0, count - state.config.drop_last)
    return {"customersCount": {"count": count, "precision": "EXACT"}}, 1, 1


def _webhook_node(sub: dict) -> dict:
    return {
        "id": sub["id"],
        "topic": sub["topic"],
        "format": sub["format"],
        "callbackUrl": sub["callbackUrl"],
        "endpoint": {"__typename": "WebhookHttpEndpoint", "callbackUrl": sub["callbackUrl"]},
        "createdAt": sub["createdAt"],
    }


def _op_webhooks(state: SandboxState, v: dict, ctx: dict) -> tuple[dict, int, int]:
    first = int(v.get("first") or 50)
    offset = int(_decode_cursor(v.get("after")).get("offset", -1)) + 1
    with state.lock:
        subs = list(state.webhooks.values())
    shown = subs[offset : offset + first]
    edges = [
        {"cursor": _offset_cursor(offset + i), "node": _webhook_node(s)}
        for i, s in enumerate(shown)
    ]
    info = {
        "hasNextPage": offset + len(shown) < len(subs),
        "endCursor": edges[-1]["cursor"] if edges else None,
    }
    data = {"webhookSubscriptions": {"edges": edges, "pageInfo": info}}
    return data, 2 + first, 2 + len(shown)


_TOPIC = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _op_webhook_create(state: SandboxState, v: dict, ctx: dict) -> tuple[dict, int, int]:
    topic = v.get("topic") or ""
    sub_in = v.get("webhookSubscription") or {}
    url = sub_in.get("callbackUrl") or ""
    errors = []
    if not _TOPIC.match(topic):
        raise GraphQLUserError(
            f"Variable $topic of type WebhookSubscriptionTopic! was provided invalid value: {topic}"
        )
    if not url.startswith(("http://", "https://")):
        errors.append(
            {"field": ["webhookSubscription", "callbackUrl"], "message": "Address is invalid"}
        )
    with state.lock:
        if any(s["topic"] == topic and s["callbackUrl"] == url for s in state.webhooks.values()):
            errors.append(
                {
                    "field": ["webhookSubscription", "callbackUrl"],
                    "message": "Address for this topic has already been taken",
                }
            )
        if errors:
            result = {"webhookSubscription": None, "userErrors": errors}
            return {"webhookSubscriptionCreate": result}, 10, 10
        state.webhook_seq += 1
        sub = {
            "id": gid("WebhookSubscription", 9000 + state.webhook_seq),
            "topic": topic,
            "format": sub_in.get("format") or "JSON",
            "callbackUrl": url,
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        state.webhooks[sub["id"]] = sub
    result = {"webhookSubscription": _webhook_node(sub), "userErrors": []}
    return {"webhookSubscriptionCreate": result}, 10, 10


GraphQLOp = Callable[[SandboxState, dict, dict], tuple[dict, int, int]]

# operation name -> handler; the names are the ones `crm_pipeline.sources.shopify` sends
_GRAPHQL_OPS: dict[str, GraphQLOp] = {
    "CustomersUpdatedSince": _op_customers,
    "OrdersUpdatedSince": _op_orders,
    "OrderLineItems": _op_order_line_items,
    "BulkRunQuery": _op_bulk_run,
    "CurrentBulkOperation": _op_bulk_current,
    "BulkOperationNode": _op_node,
    "WebhookSubscriptions": _op_webhooks,
    "WebhookSubscriptionCreate": _op_webhook_create,
    "CustomerNodes": _op_customer_nodes,
    "CustomersCount": _op_customers_count,
}
_OP_NAME = re.compile(r"\b(?:query|mutation)\s+(\w+)")


def _request_cost(requested: int, actual: int, available: float) -> dict:
    return {
        "cost": {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": {
                "maximumAvailable": SHOPIFY_BUCKET,
                "currentlyAvailable": int(available),
                "restoreRate": SHOPIFY_RESTORE_RATE,
            },
        }
    }


def handle_graphql(state: SandboxState, body: dict, base_url: str) -> dict:
    """One GraphQL request -> the JSON body Shopify would answer with (always HTTP 200)."""
    name = body.get("operationName") or ""
    if not name:
        m = _OP_NAME.search(body.get("query") or "")
        name = m.group(1) if m else ""
    op = _GRAPHQL_OPS.get(name)
    variables = body.get("variables") or {}
    if op is None:
        msg = f"Sandbox does not know operation {name!r}; known: {sorted(_GRAPHQL_OPS)}"
        return {"errors": [{"message": msg, "extensions": {"code": "undefinedField"}}]}
    # price the request before running it, as Shopify does
    if name == "CustomersUpdatedSince":
        requested = 2 + int(variables.get("first") or 50) * 4
    elif name == "OrdersUpdatedSince":
        first = int(variables.get("first") or 50)
        requested = _order_cost(first, int(variables.get("lineItemsFirst") or 50))
    elif name == "OrderLineItems":
        requested = 3 + int(variables.get("first") or 250) * 2
    elif name == "CustomerNodes":
        requested = 1 + len(variables.get("ids") or [])
    else:
        requested = 10
    if requested > SHOPIFY_MAX_COST:
        msg = (
            f"Query cost is {requested}, which exceeds the single query max cost limit "
            f"({SHOPIFY_MAX_COST})."
        )
        return {
            "errors": [
                {"message": msg, "extensions": {"code": "MAX_COST_EXCEEDED", "cost": requested}}
            ],
            "extensions": _request_cost(requested, 0, state.available()),
        }
    if not state.take_cost(requested):
        state.count("shopify_throttled")
        return {
            "errors": [
                {
                    "message": "Throttled",
                    "extensions": {
                        "code": "THROTTLED",
                        "documentation": "https://shopify.dev/api/usage/rate-limits",
                    },
                }
            ],
            "extensions": _request_cost(requested, 0, state.available()),
        }
    try:
        data, requested_real, actual = op(state, variables, {"base_url": base_url})
    except (GraphQLUserError, ValueError) as exc:
        state.refund_cost(requested)
        code = getattr(exc, "code", "BAD_REQUEST")
        return {"errors": [{"message": str(exc), "extensions": {"code": code}}]}
    available = state.refund_cost(requested - actual)
    return {"data": data, "extensions": _request_cost(requested, actual, available)}


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


KLAVIYO_MEDIA_TYPE = "application/vnd.api+json"
_KLAVIYO_REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")


def _klaviyo_links(self_link: str, next_url: str | None) -> dict[str, str]:
    # the description types `next`/`prev` as URI strings: absent, never null, on the last page
    return {"self": self_link, "next": next_url} if next_url else {"self": self_link}


def _klaviyo_subscriptions(subs: Any) -> Any:
    """Fill in `can_receive_<channel>_marketing`, which Klaviyo always sends and stores may omit."""
    if not isinstance(subs, dict):
        return subs
    out = dict(subs)
    for channel, flag in (("email", "email"), ("sms", "sms"), ("mobile_push", "push")):
        marketing = (out.get(channel) or {}).get("marketing")
        if isinstance(marketing, dict) and f"can_receive_{flag}_marketing" not in marketing:
            consent = marketing.get("consent") or "NEVER_SUBSCRIBED"
            marketing = {
                **marketing,
                "consent": consent,
                f"can_receive_{flag}_marketing": consent == "SUBSCRIBED",
            }
            out[channel] = {**out[channel], "marketing": marketing}
    return out


def _klaviyo_profile(rec: dict, wanted: set[str], base_url: str) -> dict:
    """A store profile as Klaviyo answers it: additional fields only when asked for."""
    attrs = dict(rec.get("attributes") or {})
    for extra in ("subscriptions", "predictive_analytics"):
        if extra not in wanted:
            attrs.pop(extra, None)
        else:
            attrs.setdefault(extra, None)
    if "subscriptions" in attrs:
        attrs["subscriptions"] = _klaviyo_subscriptions(attrs["subscriptions"])
    return {
        "type": "profile",
        "id": rec["id"],
        "attributes": attrs,
        "links": {"self": f"{base_url}/api/profiles/{rec['id']}/"},
    }


def _klaviyo_throttled(state: SandboxState, limiter: str) -> _Reply | None:
    """The 429 Klaviyo answers when a burst or steady window is full (None: go ahead)."""
    wait = state.klaviyo_admit(limiter)
    if not wait:
        return None
    state.count("klaviyo_rate_limited")
    seconds = max(1, math.ceil(wait))
    detail = f"Request was throttled. Expected available in {seconds} second."
    body = _klaviyo_error(429, "throttled", "Request was throttled.", detail)
    return _Reply(429, body, {"Retry-After": str(seconds)})


def handle_klaviyo(state: SandboxState, path: str, params: dict[str, str], base_url: str) -> _Reply:
    store, cfg = state.store, state.config
    segments = path.strip("/").split("/")
    resource = segments[1] if len(segments) in (2, 3) and segments[0] == "api" else ""
    item_id = segments[2] if len(segments) == 3 else None
    predictive = "predictive_analytics" in params.get("additional-fields[profile]", "")
    limiter = {
        "profiles": "profiles_predictive" if predictive else "profiles",
        "profile": "profiles",
        "events": "events",
        "metrics": "metrics",
    }.get(resource)
    if limiter is None or (item_id is not None and resource != "profiles"):
        return _Reply(404, _klaviyo_error(404, "not_found", "Not found.", f"No route {path}"))
    throttled = _klaviyo_throttled(state, limiter)
    if throttled:
        return throttled
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
    wanted = set(filter(None, params.get("additional-fields[profile]", "").split(",")))
    try:
        if resource == "metrics":
            data = [
                {**m, "links": {"self": f"{base_url}/api/metrics/{m['id']}/"}}
                for m in store.metrics
            ]
            return _Reply(200, {"data": data, "links": _klaviyo_links(self_link, None)})
        if resource == "profiles" and item_id is not None:
            rec = state.klaviyo_profile_lookup.get(item_id)
            if rec is None:
                detail = f"A profile with id {item_id} does not exist."
                return _Reply(404, _klaviyo_error(404, "not_found", "Not found.", detail))
            profile = _klaviyo_profile(rec, wanted, base_url)
            return _Reply(200, {"data": profile, "links": {"self": self_link}})
        if resource == "profiles":
            size = int(params.get("page[size]", 20))
            if not 1 <= size <= 100:
                detail = "Page size must be an integer between 1 and 100."
                return _Reply(400, _klaviyo_error(400, "invalid", "Invalid input.", detail))
            listed = store.profiles
            if cfg.drop_last:
                listed = listed.subset(np.arange(len(listed)) < len(listed) - cfg.drop_last)
            records, next_url = _klaviyo_page(listed, params, "updated", size, link)
            data = [_klaviyo_profile(rec, wanted, base_url) for _, rec in records]
            return _Reply(200, {"data": data, "links": _klaviyo_links(self_link, next_url)})
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
                            metric = store.metrics[code]
                            link = f"{base_url}/api/metrics/{metric['id']}/"
                            included.append({**metric, "links": {"self": link}})
                    else:
                        profile = state.klaviyo_profile_lookup.get(ref["id"])
                        profile = profile or {"id": ref["id"], "attributes": {}}
                        included.append(_klaviyo_profile(profile, set(), base_url))
        body: dict[str, Any] = {"data": data, "links": _klaviyo_links(self_link, next_url)}
        if includes:
            body["included"] = included
        return _Reply(200, body)
    except ValueError as exc:
        return _Reply(400, _klaviyo_error(400, "invalid", "Invalid input.", str(exc)))


def handle_klaviyo_request(
    state: SandboxState,
    method: str,
    path: str,
    params: dict[str, str],
    body: bytes,
    content_type: str | None,
    base_url: str,
) -> _Reply:
    """Any Klaviyo /api/ request: webhooks API or the read endpoints, in JSON:API media type."""
    media = (content_type or "").split(";")[0].strip().lower()
    webhooks = path.startswith(("/api/webhooks", "/api/webhook-topics"))
    if not webhooks and method == "GET":
        reply = handle_klaviyo(state, path, params, base_url)
    elif not webhooks:
        detail = f"Method {method} not allowed on {path}"
        reply = _Reply(405, _klaviyo_error(405, "method_not_allowed", "Not allowed.", detail))
    elif throttled := _klaviyo_throttled(state, "webhooks"):
        reply = throttled
    elif body and media != KLAVIYO_MEDIA_TYPE:
        detail = f"Content-Type must be {KLAVIYO_MEDIA_TYPE}, not {content_type!r}."
        reply = _Reply(415, _klaviyo_error(415, "unsupported_media_type", "Unsupported.", detail))
    else:
        try:
            reply = _Reply(*state.klaviyo_webhooks.handle(method, path, params, body, base_url))
        except KlaviyoApiError as exc:
            reply = _Reply(exc.status, _klaviyo_error(exc.status, exc.code, exc.title, exc.detail))
    if reply.body is not None:
        reply.headers.setdefault("Content-Type", KLAVIYO_MEDIA_TYPE)
    return reply


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
        if not _GRAPHQL_PATH.match(path):
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
            self._send(_Reply(400, {"errors": {"query": "Required parameter missing or invalid"}}))
            return
        self._send(_Reply(200, handle_graphql(self.state, body, self.base_url)))

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
        op = self.state.bulk_ops.get(gid("BulkOperation", number))
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
