"""The sandbox's Klaviyo write side: profile bulk import jobs, lists and their members, events.

What the pipeline's reverse sync (crm_pipeline/activation) sends lands here and can be read back
through the same API: a profile's imported properties on `GET /api/profiles/{id}`, a list's
members on `GET /api/lists/{id}/relationships/profiles`, created events under their metric on
`GET /api/events`. Klaviyo's rules that matter to a careful client hold too: a bulk job takes at
most 10,000 profiles and 5 MB, bad profiles become import errors instead of failing the job,
list relationship calls take at most 1,000 profiles, and an event repeating the `unique_id` of
one already recorded for the same profile and metric is accepted but not recorded again.
Profiles from the store stay in the store; imports are an overlay keyed by profile id.
"""

from __future__ import annotations

import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson

from crm_pipeline.sandbox.klaviyo_webhooks import KlaviyoApiError, _invalid
from crm_pipeline.sandbox.store_index import JsonlIndex

# Klaviyo's documented limits (OpenAPI description of bulk_import_profiles, add_profiles_to_list)
MAX_JOB_PROFILES = 10_000
MAX_JOB_BYTES = 5 * 1024 * 1024
MAX_PROFILE_BYTES = 100 * 1024
MAX_LIST_PROFILES = 1_000

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_EQUALS = re.compile(r"equals\((\w+),\"([^\"]*)\"\)")

# (method, path pattern) -> handler name and the rate-limit bucket it counts against
ROUTES: list[tuple[str, re.Pattern[str], str, str]] = [
    ("POST", re.compile(r"^/api/profile-bulk-import-jobs/?$"), "create_job", "bulk_import"),
    ("GET", re.compile(r"^/api/profile-bulk-import-jobs/([^/]+)/?$"), "get_job", "bulk_import"),
    (
        "GET",
        re.compile(r"^/api/profile-bulk-import-jobs/([^/]+)/profiles/?$"),
        "job_profiles",
        "bulk_import",
    ),
    (
        "GET",
        re.compile(r"^/api/profile-bulk-import-jobs/([^/]+)/import-errors/?$"),
        "job_errors",
        "bulk_import",
    ),
    ("POST", re.compile(r"^/api/lists/?$"), "create_list", "lists_write"),
    ("GET", re.compile(r"^/api/lists/?$"), "get_lists", "lists"),
    ("GET", re.compile(r"^/api/lists/([^/]+)/?$"), "get_list", "lists"),
    (
        "GET",
        re.compile(r"^/api/lists/([^/]+)/relationships/profiles/?$"),
        "list_members",
        "lists",
    ),
    (
        "POST",
        re.compile(r"^/api/lists/([^/]+)/relationships/profiles/?$"),
        "add_members",
        "lists_write",
    ),
    (
        "DELETE",
        re.compile(r"^/api/lists/([^/]+)/relationships/profiles/?$"),
        "remove_members",
        "lists_write",
    ),
    ("POST", re.compile(r"^/api/events/?$"), "create_event", "events_write"),
]


def route(method: str, path: str) -> tuple[str, str, tuple[str, ...]] | None:
    """(handler name, rate-limit bucket, path arguments) for a write-side request, else None."""
    for verb, pattern, handler, bucket in ROUTES:
        m = pattern.match(path)
        if verb == method and m:
            return handler, bucket, m.groups()
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _new_id() -> str:
    return uuid.uuid4().hex[:26].upper()


def _not_found(what: str, ident: str) -> KlaviyoApiError:
    return KlaviyoApiError(
        404, "not_found", "Not found.", f"A {what} with id {ident} does not exist."
    )


def _data(body: bytes) -> Any:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _invalid("The request body is not JSON.") from exc
    if not isinstance(doc, dict) or "data" not in doc:
        raise _invalid("The request body must be a JSON:API document with `data`.")
    return doc["data"]


def _page(params: dict[str, str], maximum: int, default: int) -> tuple[int, int]:
    size = int(params.get("page[size]", default))
    if not 1 <= size <= maximum:
        raise _invalid(f"Page size must be an integer between 1 and {maximum}.")
    cursor = params.get("page[cursor]") or "0"
    if not cursor.isdigit():
        raise _invalid(f"Invalid page cursor {cursor!r}")
    return int(cursor), size


class KlaviyoWrites:
    """Everything the write endpoints changed, guarded by one lock."""

    def __init__(self, store_profiles: JsonlIndex) -> None:
        self.store_profiles = store_profiles
        self.lock = threading.Lock()
        self.profiles: dict[str, dict[str, Any]] = {}  # id -> attributes (overlay or created)
        self._by_key: dict[str, str] | None = None  # "email:x" / "phone:x" -> profile id
        self.jobs: dict[str, dict[str, Any]] = {}
        self.lists: dict[str, dict[str, Any]] = {}
        self.members: dict[str, dict[str, None]] = {}
        self.metrics: dict[str, str] = {}  # name -> id of metrics created by events
        self.events: list[dict[str, Any]] = []
        self._event_keys: set[tuple[str, str, str]] = set()

    def reload(self, store_profiles: JsonlIndex) -> None:
        """The store was rewritten: look identifiers up in the new one (imports are kept)."""
        with self.lock:
            self.store_profiles, self._by_key = store_profiles, None

    # ------------------------------------------------------------------ profiles
    def _keys(self) -> dict[str, str]:
        if self._by_key is None:
            keys: dict[str, str] = {}
            for _, rec in self.store_profiles.iter_range(0):
                attrs = rec.get("attributes") or {}
                for key in self._profile_keys(attrs):
                    keys.setdefault(key, str(rec.get("id")))
            self._by_key = keys
        return self._by_key

    @staticmethod
    def _profile_keys(attrs: dict[str, Any]) -> list[str]:
        out = []
        if attrs.get("email"):
            out.append("email:" + str(attrs["email"]).strip().lower())
        if attrs.get("phone_number"):
            out.append("phone:" + str(attrs["phone_number"]))
        return out

    def overlay(self, profile_id: str) -> dict[str, Any] | None:
        """What imports wrote on this profile (None when nothing)."""
        with self.lock:
            found = self.profiles.get(profile_id)
            return None if found is None else dict(found)

    def _upsert(self, item: dict[str, Any]) -> str:
        attrs = dict(item.get("attributes") or {})
        keys = self._keys()
        pid = item.get("id") or next(
            (keys[k] for k in self._profile_keys(attrs) if k in keys), None
        )
        if pid is None:
            pid = _new_id()
            self.profiles[pid] = {"created": _now()}
        current = self.profiles.setdefault(pid, {})
        properties = {**(current.get("properties") or {}), **(attrs.pop("properties", None) or {})}
        # subscriptions are not importable here: consent goes through the subscribe endpoints
        attrs.pop("subscriptions", None)
        current.update({k: v for k, v in attrs.items() if v is not None})
        current["properties"] = properties
        current["updated"] = _now()
        for key in self._profile_keys(current):
            keys[key] = pid
        return pid

    def _profile_error(self, item: Any) -> str | None:
        if not isinstance(item, dict) or item.get("type") != "profile":
            return "Each profile must be a JSON:API resource of type `profile`."
        attrs = item.get("attributes") or {}
        if len(orjson.dumps(item)) > MAX_PROFILE_BYTES:
            return "A profile must not exceed 100KB."
        if not (item.get("id") or attrs.get("email") or attrs.get("phone_number")):
            return "A profile needs an id, an email or a phone number."
        if attrs.get("email") and not _EMAIL.match(str(attrs["email"])):
            return f"Invalid email address {attrs['email']!r}."
        if attrs.get("phone_number") and not _E164.match(str(attrs["phone_number"])):
            return "Invalid phone number: expected E.164."
        return None

    # ------------------------------------------------------------------ bulk import jobs
    def create_job(self, body: bytes, params: dict[str, str], base_url: str) -> tuple[int, Any]:
        if len(body) > MAX_JOB_BYTES:
            raise KlaviyoApiError(413, "too_large", "Payload too large.", "The maximum is 5MB.")
        data = _data(body)
        if not isinstance(data, dict) or data.get("type") != "profile-bulk-import-job":
            raise _invalid("`data.type` must be profile-bulk-import-job.")
        items = ((data.get("attributes") or {}).get("profiles") or {}).get("data")
        if not isinstance(items, list) or not items:
            raise _invalid("`data.attributes.profiles.data` must list at least one profile.")
        if len(items) > MAX_JOB_PROFILES:
            raise _invalid(f"A job accepts at most {MAX_JOB_PROFILES} profiles.")
        job_id = _new_id()
        with self.lock:
            ids: list[str] = []
            errors: list[dict[str, Any]] = []
            for index, item in enumerate(items):
                problem = self._profile_error(item)
                if problem:
                    errors.append(
                        {
                            "type": "import-error",
                            "id": str(uuid.uuid4()),
                            "attributes": {
                                "code": "invalid",
                                "title": "Invalid input.",
                                "detail": problem,
                                "source": {"pointer": f"/data/attributes/profiles/data/{index}"},
                                "original_payload": item if isinstance(item, dict) else None,
                            },
                        }
                    )
                    continue
                ids.append(self._upsert(item))
            self.jobs[job_id] = {
                "status": "queued",
                "created_at": _now(),
                "total_count": len(items),
                "completed_count": len(ids),
                "failed_count": len(errors),
                "completed_at": None,
                "profile_ids": list(dict.fromkeys(ids)),
                "errors": errors,
            }
            job = self._job(job_id, base_url)
        return 202, {"data": job, "links": {"self": f"{base_url}/api/profile-bulk-import-jobs"}}

    def _job(self, job_id: str, base_url: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        attrs = {
            k: job[k]
            for k in ("status", "created_at", "total_count", "completed_count", "failed_count")
        }
        attrs["completed_at"] = job["completed_at"]
        attrs["expires_at"] = None
        attrs["started_at"] = job["created_at"]
        self_link = f"{base_url}/api/profile-bulk-import-jobs/{job_id}/"
        return {
            "type": "profile-bulk-import-job",
            "id": job_id,
            "attributes": attrs,
            "links": {"self": self_link},
        }

    def _job_or_404(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None:
            raise _not_found("profile-bulk-import-job", job_id)
        return job

    def get_job(self, job_id: str, params: dict[str, str], base_url: str) -> tuple[int, Any]:
        with self.lock:
            job = self._job_or_404(job_id)
            # the first look finds it processing, the next complete: clients really poll
            if job["status"] == "queued":
                job["status"] = "processing"
            elif job["status"] == "processing":
                job["status"], job["completed_at"] = "complete", _now()
            body = self._job(job_id, base_url)
        return 200, {"data": body, "links": {"self": body["links"]["self"]}}

    def _paged(
        self, items: list[Any], params: dict[str, str], path: str, base_url: str, maximum: int
    ) -> dict[str, Any]:
        start, size = _page(params, maximum, min(20, maximum))
        chunk = items[start : start + size]
        links = {"self": f"{base_url}{path}"}
        if start + size < len(items):
            links["next"] = f"{base_url}{path}?" + urlencode(
                {**params, "page[cursor]": str(start + size)}
            )
        return {"data": chunk, "links": links}

    def job_profiles(self, job_id: str, params: dict[str, str], base_url: str) -> tuple[int, Any]:
        with self.lock:
            job = self._job_or_404(job_id)
            ids = list(job["profile_ids"])
        path = f"/api/profile-bulk-import-jobs/{job_id}/profiles/"
        body = self._paged(ids, params, path, base_url, 100)
        body["data"] = [self.profile_resource(pid, base_url) for pid in body["data"]]
        return 200, body

    def job_errors(self, job_id: str, params: dict[str, str], base_url: str) -> tuple[int, Any]:
        with self.lock:
            errors = list(self._job_or_404(job_id)["errors"])
        path = f"/api/profile-bulk-import-jobs/{job_id}/import-errors/"
        return 200, self._paged(errors, params, path, base_url, 100)

    def profile_resource(self, pid: str, base_url: str) -> dict[str, Any]:
        attrs = self.overlay(pid) or {}
        return {
            "type": "profile",
            "id": pid,
            "attributes": attrs,
            "links": {"self": f"{base_url}/api/profiles/{pid}/"},
        }

    # ------------------------------------------------------------------ lists
    def _list(self, list_id: str, base_url: str) -> dict[str, Any]:
        return {
            "type": "list",
            "id": list_id,
            "attributes": dict(self.lists[list_id]),
            "links": {"self": f"{base_url}/api/lists/{list_id}/"},
        }

    def create_list(self, body: bytes, params: dict[str, str], base_url: str) -> tuple[int, Any]:
        data = _data(body)
        name = (
            ((data or {}).get("attributes") or {}).get("name") if isinstance(data, dict) else None
        )
        if not isinstance(data, dict) or data.get("type") != "list" or not name:
            raise _invalid("A list needs `type: list` and a name.")
        with self.lock:
            list_id = _new_id()[:6]
            now = _now()
            self.lists[list_id] = {
                "name": name,
                "created": now,
                "updated": now,
                "opt_in_process": "single_opt_in",
            }
            self.members[list_id] = {}
            body_out = self._list(list_id, base_url)
        return 201, {"data": body_out, "links": {"self": body_out["links"]["self"]}}

    def get_lists(self, params: dict[str, str], base_url: str) -> tuple[int, Any]:
        wanted = dict(_EQUALS.findall(params.get("filter", "")))
        with self.lock:
            ids = [
                lid
                for lid, attrs in self.lists.items()
                if "name" not in wanted or attrs["name"] == wanted["name"]
            ]
            body = self._paged(ids, params, "/api/lists/", base_url, 10)
            body["data"] = [self._list(lid, base_url) for lid in body["data"]]
        return 200, body

    def get_list(self, list_id: str, params: dict[str, str], base_url: str) -> tuple[int, Any]:
        with self.lock:
            if list_id not in self.lists:
                raise _not_found("list", list_id)
            body = self._list(list_id, base_url)
        return 200, {"data": body, "links": {"self": body["links"]["self"]}}

    def list_members(self, list_id: str, params: dict[str, str], base_url: str) -> tuple[int, Any]:
        with self.lock:
            if list_id not in self.lists:
                raise _not_found("list", list_id)
            ids = list(self.members[list_id])
        path = f"/api/lists/{list_id}/relationships/profiles/"
        body = self._paged(ids, params, path, base_url, 100)
        body["data"] = [{"type": "profile", "id": pid} for pid in body["data"]]
        return 200, body

    def _member_ids(self, list_id: str, body: bytes) -> list[str]:
        if list_id not in self.lists:
            raise _not_found("list", list_id)
        data = _data(body)
        if not isinstance(data, list) or not all(
            isinstance(r, dict) and r.get("type") == "profile" and r.get("id") for r in data
        ):
            raise _invalid("`data` must list profile identifiers.")
        if len(data) > MAX_LIST_PROFILES:
            raise _invalid(f"At most {MAX_LIST_PROFILES} profiles per call.")
        return [str(r["id"]) for r in data]

    def add_members(
        self, list_id: str, body: bytes, params: dict[str, str], base_url: str
    ) -> tuple[int, Any]:
        with self.lock:
            for pid in self._member_ids(list_id, body):
                self.members[list_id][pid] = None
        return 204, None

    def remove_members(
        self, list_id: str, body: bytes, params: dict[str, str], base_url: str
    ) -> tuple[int, Any]:
        with self.lock:
            for pid in self._member_ids(list_id, body):
                self.members[list_id].pop(pid, None)
        return 204, None

    # ------------------------------------------------------------------ events
    def create_event(self, body: bytes, params: dict[str, str], base_url: str) -> tuple[int, Any]:
        data = _data(body)
        attrs = (data or {}).get("attributes") if isinstance(data, dict) else None
        if not isinstance(attrs, dict) or data.get("type") != "event":
            raise _invalid("An event needs `type: event` and attributes.")
        metric = (((attrs.get("metric") or {}).get("data") or {}).get("attributes") or {}).get(
            "name"
        )
        profile = (attrs.get("profile") or {}).get("data") or {}
        if not metric or not isinstance(attrs.get("properties"), dict):
            raise _invalid("An event needs a metric name and properties.")
        with self.lock:
            pid = profile.get("id") or self._keys().get(
                next(iter(self._profile_keys(profile.get("attributes") or {})), ""), None
            )
            if pid is None:
                pid = self._upsert({"attributes": profile.get("attributes") or {}})
            metric_id = self.metrics.setdefault(metric, _new_id()[:6])
            when = attrs.get("time") or _now()
            unique = attrs.get("unique_id") or str(when)[:19]
            key = (pid, metric_id, str(unique))
            if key not in self._event_keys:  # Klaviyo records the first of a unique_id only
                self._event_keys.add(key)
                self.events.append(
                    {
                        "type": "event",
                        "id": _new_id(),
                        "attributes": {
                            "datetime": when,
                            "uuid": str(uuid.uuid4()),
                            "event_properties": {**attrs["properties"], "$event_id": unique},
                        },
                        "relationships": {
                            "profile": {"data": {"type": "profile", "id": pid}},
                            "metric": {"data": {"type": "metric", "id": metric_id}},
                        },
                    }
                )
        return 202, None

    def metric_resources(self, base_url: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {
                    "type": "metric",
                    "id": mid,
                    "attributes": {"name": name},
                    "links": {"self": f"{base_url}/api/metrics/{mid}/"},
                }
                for name, mid in self.metrics.items()
            ]

    def events_of(self, metric_id: str, base_url: str) -> list[dict[str, Any]] | None:
        """Events created under a metric the writes created (None: not one of ours), as
        get-events answers them."""
        with self.lock:
            if metric_id not in self.metrics.values():
                return None
            found = [
                e for e in self.events if e["relationships"]["metric"]["data"]["id"] == metric_id
            ]
        return [
            {
                **e,
                "attributes": {
                    **e["attributes"],
                    "timestamp": int(
                        datetime.fromisoformat(e["attributes"]["datetime"]).timestamp()
                    ),
                },
                "links": {"self": f"{base_url}/api/events/{e['id']}/"},
            }
            for e in found
        ]

    # ------------------------------------------------------------------ dispatch
    def handle(
        self, method: str, path: str, params: dict[str, str], body: bytes, base_url: str
    ) -> tuple[int, Any]:
        found = route(method, path)
        if found is None:
            raise KlaviyoApiError(404, "not_found", "Not found.", f"No route {method} {path}")
        handler, _, args = found
        fn = getattr(self, handler)
        if method == "GET":
            return fn(*args, params, base_url)  # type: ignore[no-any-return]
        return fn(*args, body, params, base_url)  # type: ignore[no-any-return]
