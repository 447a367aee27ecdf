"""The sandbox's Klaviyo REST API (JSON:API pages, cursor links, Klaviyo's rate limits and
errors) over the store's Klaviyo indexes."""

from __future__ import annotations

import base64
import math
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from crm_pipeline.sandbox.reply import _Reply
from crm_pipeline.sandbox.state import SandboxState
from crm_pipeline.sandbox.store_index import JsonlIndex, safe_us, to_us

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
