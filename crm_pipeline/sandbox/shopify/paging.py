"""Relay connections over the store's sorted indexes and over in-memory lists.

Store connections page in `updated_at` order (the order of the byte-offset indexes) with
Shopify-like opaque cursors; only `first`/`after` paging and the `updated_at` search term are
served, and anything else is refused with an error rather than answered wrongly.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from graphql import GraphQLError

from crm_pipeline.sandbox.store_index import MIN_US, JsonlIndex, to_us

MAX_PAGE = 250

_UPDATED_FILTER = re.compile(r"updated_at\s*:\s*(>=|>|<=|<)?\s*['\"]?([0-9T:\-+.Z ]+?)['\"]?(\s|$)")


def user_error(message: str, code: str = "BAD_REQUEST") -> GraphQLError:
    """An error Shopify answers as 200 with `errors` and this extensions code."""
    return GraphQLError(message, extensions={"code": code})


def parse_search(query: str | None) -> tuple[int, int | None]:
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


def search_range(index: JsonlIndex, search: str | None) -> tuple[int, int]:
    """Positions [start, stop) of the index matching a search string."""
    lower, upper = parse_search(search)
    start = index.lower_bound(lower) if lower != MIN_US else 0
    stop = index.upper_bound(upper) if upper is not None else len(index)
    return start, stop


def _decode_cursor(cursor: str | None) -> dict:
    if not cursor:
        return {}
    try:
        return orjson.loads(base64.b64decode(cursor))
    except ValueError as exc:
        raise user_error(f"Invalid cursor for current pagination sort: {cursor}") from exc


def _first(args: dict[str, Any]) -> int:
    if args.get("last") is not None or args.get("before") is not None or args.get("reverse"):
        raise user_error("The sandbox pages forward only: use `first` and `after`.")
    first = args.get("first")
    if first is None:
        raise user_error("you must provide one of first or last")
    if not 0 < first <= MAX_PAGE:
        raise user_error(f"The `first` argument must be between 1 and {MAX_PAGE}.")
    return first


def _store_cursor(index: JsonlIndex, pos: int) -> str:
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
        raise user_error(f"Invalid cursor for current pagination sort: {cursor}") from exc
    lo, hi = index.lower_bound(key), index.upper_bound(key)
    hits = np.nonzero(index.tags[lo:hi] == last_id)[0]
    return lo + int(hits[0]) + 1 if len(hits) else hi


def _connection(edges: list[dict], has_next: bool, has_previous: bool) -> dict:
    return {
        "edges": edges,
        "nodes": [e["node"] for e in edges],
        "pageInfo": {
            "hasNextPage": has_next,
            "hasPreviousPage": has_previous,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


def store_connection(
    index: JsonlIndex, args: dict[str, Any], make: Callable[[dict], dict], sort_given: bool
) -> dict:
    """One page of a store file, oldest `updated_at` first (the pipeline's `sortKey`; without
    one, Shopify's default `ID` order is served in that order too)."""
    if sort_given and args.get("sortKey") != "UPDATED_AT":
        raise user_error("The sandbox sorts by UPDATED_AT only.")
    first = _first(args)
    start, stop = search_range(index, args.get("query"))
    start = max(start, _after(index, args.get("after")))
    end = min(stop, start + first)
    edges = [
        {"cursor": _store_cursor(index, pos), "node": make(rec)}
        for pos, rec in index.iter_range(start, end)
    ]
    return _connection(edges, end < stop, start > 0)


def _offset_cursor(offset: int) -> str:
    return base64.b64encode(orjson.dumps({"offset": offset})).decode()


def list_connection(items: list[dict], args: dict[str, Any]) -> dict:
    """One page of an in-memory list (line items, refund line items, webhook subscriptions)."""
    first = _first(args)
    offset = int(_decode_cursor(args.get("after")).get("offset", -1)) + 1
    shown = items[offset : offset + first]
    edges = [{"cursor": _offset_cursor(offset + i), "node": n} for i, n in enumerate(shown)]
    return _connection(edges, offset + len(shown) < len(items), offset > 0)


def find_by_id(index: JsonlIndex, numeric_id: int) -> dict | None:
    """The store record with this id, or None (a scan of the id column: fine for lookups)."""
    hits = np.nonzero(index.tags == numeric_id)[0]
    return index.read(int(hits[0])) if len(hits) else None
