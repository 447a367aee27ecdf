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

import numpy as np

from crm_pipeline.sandbox.klaviyo_activation import route as write_route
from crm_pipeline.sandbox.klaviyo_webhooks import KlaviyoApiError
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
            ] + state.klaviyo_writes.metric_resources(base_url)
            return _Reply(200, {"data": data, "links": _klaviyo_links(self_link, None)})
        if resource == "profiles" and item_id is not None:
            rec = state.klaviyo_profile_lookup.get(item_id)
            imported = state.klaviyo_writes.overlay(item_id)
            if imported is not None:  # what bulk imports wrote, over the store's record
                rec = rec or {"id": item_id, "attributes": {}}
                attrs = {**(rec.get("attributes") or {}), **imported}
                attrs["properties"] = {
                    **((rec.get("attributes") or {}).get("properties") or {}),
                    **(imported.get("properties") or {}),
                }
                rec = {**rec, "attributes": attrs}
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
            created = (
                state.klaviyo_writes.events_of(value, base_url) if fld == "metric_id" else None
            )
            if created is not None:  # events the pipeline created: one page, read back by tests
                return _Reply(200, {"data": created, "links": _klaviyo_links(self_link, None)})
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


def _write_reply(
    state: SandboxState,
    bucket: str,
    method: str,
    path: str,
    params: dict[str, str],
    body: bytes,
    media: str,
    base_url: str,
) -> _Reply:
    """A write-side request (sandbox/klaviyo_activation.py) under its rate-limit bucket."""
    throttled = _klaviyo_throttled(state, bucket)
    if throttled:
        return throttled
    if method in ("POST", "DELETE") and media != KLAVIYO_MEDIA_TYPE:
        detail = f"Content-Type must be {KLAVIYO_MEDIA_TYPE}."
        return _Reply(415, _klaviyo_error(415, "unsupported_media_type", "Unsupported.", detail))
    try:
        return _Reply(*state.klaviyo_writes.handle(method, path, params, body, base_url))
    except KlaviyoApiError as exc:
        return _Reply(exc.status, _klaviyo_error(exc.status, exc.code, exc.title, exc.detail))
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
    writes = write_route(method, path)
    if writes is not None:
        reply = _write_reply(state, writes[1], method, path, params, body, media, base_url)
    elif not webhooks and method == "GET":
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
