"""Full pulls through bulk operations: start, poll, stream the JSONL result, assemble orders."""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from typing import Any, cast

import orjson

from crm_pipeline.ingest.bad_records import Unreadable, line_problem, line_record
from crm_pipeline.sources.errors import (
    BadRequest,
    BulkOperationFailed,
    RetriableSourceError,
    SourceError,
    Timeout,
)
from crm_pipeline.sources.http import error_for_status
from crm_pipeline.sources.shopify.base import _ClientBase
from crm_pipeline.sources.shopify.convert import _nodes, customer_to_rest, order_to_rest
from crm_pipeline.sources.shopify.queries import (
    BULK_CUSTOMERS,
    BULK_NODE,
    BULK_ORDERS,
    BULK_RUN,
    CURRENT_BULK,
    ORDER_REFUND_LINE_ITEMS_QUERY,
    _search_since,
)
from crm_pipeline.sources.shopify.transport import _TRANSPORT_ERRORS

log = logging.getLogger(__name__)

_BLOCK = 1 << 20
# orders per lookup: 10 x (3 + 50 refund line items) points, well under the 1000-point limit;
# an order with a bigger refund is asked again alone with Shopify's largest page
_REFUND_LOOKUP_ORDERS = 10
_MAX_REFUND_LINES = 250

_TERMINAL_BULK = {"COMPLETED", "FAILED", "CANCELED", "EXPIRED"}


class _Bulk(_ClientBase):
    """The bulk pulls of ShopifyClient."""

    def bulk_customers(
        self, since: datetime | None = None
    ) -> Iterator[dict[str, Any] | Unreadable]:
        """Every customer (or those updated since), through one bulk operation."""
        for obj in self._bulk_objects(BULK_CUSTOMERS, since):
            if isinstance(obj, Unreadable):
                yield obj
            elif "__parentId" not in obj:
                yield customer_to_rest(obj)

    def bulk_customer_lines(self, since: datetime | None = None) -> Iterator[bytes]:
        """The JSONL lines of a customers bulk operation, undecoded: for decoding elsewhere
        (`mapping.shopify.map_bulk_customer_line` in ingest/workers.py).

        A full pull counts the shop's customers first, so `bulk_customers_incomplete` can tell
        a result that came back short (counted before: customers created meanwhile only add)."""
        self.last_bulk = None
        self.expected_customers = self.customers_count() if since is None else None
        return self._bulk_lines(BULK_CUSTOMERS, since, keep_final=True)

    def bulk_customers_incomplete(self) -> str | None:
        """Why the last full customers bulk pull is known incomplete, or None if it is not:
        partial data, no finished operation, or fewer objects than the shop counted."""
        final = self.last_bulk
        if final is None:
            return "no completed bulk operation"
        if final.get("partialDataUrl"):
            return f"bulk operation {final.get('id')} returned partial data"
        expected = self.expected_customers
        if expected is None:
            return None
        objects = int(final.get("objectCount") or 0)
        if objects < int(expected.get("count") or 0):
            return (
                f"bulk operation {final.get('id')} returned {objects} objects but the shop "
                f"counted {expected.get('count')} customers ({expected.get('precision')})"
            )
        return None

    def bulk_orders(self, since: datetime | None = None) -> Iterator[dict[str, Any] | Unreadable]:
        """Every order with its line items and refunds, through one bulk operation (and a
        lookup of the refund line items of the orders that have refunds)."""
        pending: list[dict[str, Any]] = []
        refunded = 0
        for order in self._bulk_order_nodes(since):
            if isinstance(order, Unreadable):  # quarantined by the loader; the pull goes on
                yield order
                continue
            pending.append(order)
            refunded += bool(order.get("refunds"))
            if refunded >= _REFUND_LOOKUP_ORDERS or len(pending) >= 1000:
                yield from self._with_refund_line_items(pending)
                pending, refunded = [], 0
        yield from self._with_refund_line_items(pending)

    def _bulk_order_nodes(self, since: datetime | None) -> Iterator[dict[str, Any] | Unreadable]:
        """Order nodes of a bulk operation, their line item lines attached; a line that is not
        an object comes as an `Unreadable`."""
        current: dict[str, Any] | None = None
        for obj in self._bulk_objects(BULK_ORDERS, since):
            if isinstance(obj, Unreadable):
                yield obj
                continue
            parent = obj.pop("__parentId", None)
            if parent is None:
                if current is not None:
                    yield current
                current = obj
                current["lineItems"] = []
            elif current is not None and parent == current["id"]:
                current["lineItems"].append(obj)
            else:
                # children always follow their parent in Shopify's format; anything else means
                # the file is not what we asked for, and assembling it would lose data silently
                raise BulkOperationFailed(f"bulk line with unknown parent {parent}")
        if current is not None:
            yield current

    def _with_refund_line_items(self, orders: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        ids = [o["id"] for o in orders if o.get("refunds")]
        lines: dict[str, list[dict[str, Any]]] = {}
        for start in range(0, len(ids), _REFUND_LOOKUP_ORDERS):
            lines.update(self._refund_line_items(ids[start : start + _REFUND_LOOKUP_ORDERS]))
        for order in orders:
            for refund in order.get("refunds") or []:
                refund["refundLineItems"] = lines.get(refund["id"], [])
            yield order_to_rest(order)

    def _refund_line_items(
        self, order_ids: list[str], first: int = 50
    ) -> dict[str, list[dict[str, Any]]]:
        """refund gid -> its refund line items, for these orders; an order with a refund of
        more than `first` is asked again alone with the largest page Shopify allows."""
        data = self.execute(
            ORDER_REFUND_LINE_ITEMS_QUERY,
            {"ids": order_ids, "first": first},
            "OrderRefundLineItems",
            cost=3 + len(order_ids) * (3 + first),
        )
        out: dict[str, list[dict[str, Any]]] = {}
        more: list[str] = []
        for order in data.get("nodes") or []:
            for refund in (order or {}).get("refunds") or []:
                conn = refund.get("refundLineItems") or {}
                if (conn.get("pageInfo") or {}).get("hasNextPage"):
                    more.append(order["id"])
                out[refund["id"]] = _nodes(conn)
        for order_id in dict.fromkeys(more):
            if first >= _MAX_REFUND_LINES:
                raise BulkOperationFailed(
                    f"order {order_id} has a refund of more than {first} line items"
                )
            out.update(self._refund_line_items([order_id], _MAX_REFUND_LINES))
        return out

    def _bulk_objects(
        self, template: str, since: datetime | None
    ) -> Iterator[dict[str, Any] | Unreadable]:
        """The bulk result's objects; a line that is not one comes as an `Unreadable`."""
        for number, line in enumerate(self._bulk_lines(template, since), start=1):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                yield obj
            else:
                yield Unreadable(
                    "shopify", None, line_record(line, number), [cast(str, line_problem(line))]
                )

    def _bulk_lines(
        self, template: str, since: datetime | None, *, keep_final: bool = False
    ) -> Iterator[bytes]:
        search = f'(query: "{_search_since(since)}")' if since else ""
        op = self._start_bulk(template.replace("{filter}", search))
        final = self._wait_bulk(op["id"])
        if keep_final:
            self.last_bulk = final
        status = final["status"]
        if status != "COMPLETED" or final.get("partialDataUrl"):
            raise BulkOperationFailed(
                f"Shopify bulk operation {final['id']} ended {status}"
                f" (errorCode={final.get('errorCode')}, objects={final.get('objectCount')})",
                status=status,
                error_code=final.get("errorCode"),
            )
        if not final.get("url"):
            return  # no objects matched: Shopify gives no file
        yield from self._stream_lines(final["url"])

    def _start_bulk(self, query: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.bulk_timeout
        while True:
            data = self.execute(BULK_RUN, {"query": query}, "BulkRunQuery")
            result = data["bulkOperationRunQuery"]
            errors = result.get("userErrors") or []
            if not errors:
                return cast(dict[str, Any], result["bulkOperation"])
            messages = "; ".join(e.get("message", "") for e in errors)
            if "already in progress" not in messages or time.monotonic() > deadline:
                raise BadRequest(f"Shopify refused the bulk query: {messages}")
            # one bulk query per shop at a time: wait for the other one, then start ours
            log.info("another bulk operation is running; waiting for it to finish")
            current = self.execute(CURRENT_BULK, {}, "CurrentBulkOperation")
            running = current.get("currentBulkOperation") or {}
            if running.get("id"):
                self._wait_bulk(running["id"])

    def _wait_bulk(self, op_id: str) -> dict[str, Any]:
        delay, started = min(0.2, self.bulk_poll_max), time.monotonic()
        while True:
            node = self.execute(BULK_NODE, {"id": op_id}, "BulkOperationNode").get("node") or {}
            if node.get("status") in _TERMINAL_BULK:
                return node
            if time.monotonic() - started > self.bulk_timeout:
                raise BulkOperationFailed(
                    f"bulk operation {op_id} still {node.get('status')} after "
                    f"{self.bulk_timeout:.0f}s",
                    status=node.get("status"),
                )
            time.sleep(delay)
            delay = min(self.bulk_poll_max, delay * 1.5)

    def _stream_lines(self, url: str) -> Iterator[bytes]:
        """The result file line by line, resuming with a Range request if the stream breaks.

        Read in 1 MiB blocks and split here: iterating the response line by line cost a
        buffered `readline` call per customer."""
        offset, attempt = 0, 0
        while True:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                request = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    skip = offset if offset and response.status != 206 else 0
                    pending = b""
                    while block := response.read(_BLOCK):
                        if skip:  # server ignored Range: drop what we have
                            cut = min(skip, len(block))
                            block, skip = block[cut:], skip - cut
                        lines = (pending + block).split(b"\n")
                        pending = lines.pop()
                        for line in lines:
                            offset += len(line) + 1
                            if line.strip():
                                yield line
                    if response.length:  # closed short of its Content-Length
                        raise http.client.IncompleteRead(pending, response.length)
                    if pending:  # a last line without a newline: complete, the body ended
                        offset += len(pending)
                        if pending.strip():
                            yield pending
                return
            except urllib.error.HTTPError as exc:
                err = error_for_status(exc.code, f"bulk result download HTTP {exc.code}")
                if not isinstance(err, RetriableSourceError):
                    raise (err or SourceError(str(exc))) from exc
                failure: Exception = err
            except _TRANSPORT_ERRORS as exc:
                failure = Timeout(f"bulk result download broke at byte {offset}: {exc!r}")
            attempt += 1
            if attempt >= self.policy.max_attempts:
                raise failure
            wait = self.policy.wait_for(attempt, failure)
            log.warning("%s; resuming in %.1fs", failure, wait)
            time.sleep(wait)
