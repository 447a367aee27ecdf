"""The sandbox's Klaviyo Webhooks API: system-webhook subscriptions and the topics on offer.

Answers `/api/webhooks` and `/api/webhook-topics` as Klaviyo's OpenAPI description (revision
2026-07-15) has them, including what a careless sandbox would let pass: the endpoint must be
https, a secret is required and never echoed, the endpoint URL comes back truncated to scheme
and host ("truncated for security"), topics must be ones the account offers, and topic
relationships are only filled in with `include=webhook-topics`.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

# the system-webhook topics of an account with email, SMS, push and reviews (Klaviyo's
# "Working with system webhooks" topic table); real accounts offer what their metrics allow
SANDBOX_TOPICS = (
    "event:klaviyo.received_email",
    "event:klaviyo.opened_email",
    "event:klaviyo.clicked_email",
    "event:klaviyo.bounced_email",
    "event:klaviyo.dropped_email",
    "event:klaviyo.marked_email_as_spam",
    "event:klaviyo.subscribed_to_email_marketing",
    "event:klaviyo.unsubscribed_from_email_marketing",
    "event:klaviyo.updated_email_preferences",
    "event:klaviyo.sent_sms",
    "event:klaviyo.received_sms",
    "event:klaviyo.clicked_sms",
    "event:klaviyo.failed_to_deliver_sms",
    "event:klaviyo.subscribed_to_sms_marketing",
    "event:klaviyo.unsubscribed_from_sms_marketing",
    "event:klaviyo.received_push",
    "event:klaviyo.bounced_push",
    "event:klaviyo.opened_push",
    "event:klaviyo.ready_to_review",
    "event:klaviyo.submitted_review",
)


class KlaviyoApiError(Exception):
    """A JSON:API error answer: the caller renders it with Klaviyo's error body."""

    def __init__(self, status: int, code: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.title, self.detail = status, code, title, detail


def _invalid(detail: str) -> KlaviyoApiError:
    return KlaviyoApiError(400, "invalid", "Invalid input.", detail)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class Webhook:
    id: str
    name: str
    description: str | None
    endpoint_url: str
    secret_key: str
    topics: list[str]
    enabled: bool = True
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)


class KlaviyoWebhooks:
    """One account's system webhooks; safe to call from the server's threads."""

    def __init__(self, topics: tuple[str, ...] = SANDBOX_TOPICS) -> None:
        self.topics = topics
        self._hooks: dict[str, Webhook] = {}
        self._lock = threading.Lock()

    def handle(
        self, method: str, path: str, params: dict[str, str], body: bytes, base_url: str
    ) -> tuple[int, dict | None]:
        """(status, JSON body) for one request; raises `KlaviyoApiError` for error answers."""
        parts = [unquote(p) for p in path.strip("/").split("/")]
        include = "webhook-topics" in params.get("include", "").split(",")
        with self._lock:
            if parts[1] == "webhook-topics":
                if method != "GET":
                    raise KlaviyoApiError(405, "method_not_allowed", "Method not allowed.", method)
                return 200, self._topics(parts[2:], base_url)
            if len(parts) == 2:
                if method == "GET":
                    data = [self._resource(h, base_url, include) for h in self._hooks.values()]
                    doc = {"data": data, "links": {"self": f"{base_url}/api/webhooks/"}}
                    if include:
                        doc["included"] = self._included(self._hooks.values(), base_url)
                    return 200, doc
                if method == "POST":
                    hook = self._create(_document(body))
                    return 201, self._document(hook, base_url, include=False)
                raise KlaviyoApiError(405, "method_not_allowed", "Method not allowed.", method)
            hook = self._hooks.get(parts[2])
            if hook is None:
                raise KlaviyoApiError(404, "not_found", "Not found.", f"No webhook {parts[2]}")
            if method == "GET":
                return 200, self._document(hook, base_url, include)
            if method == "PATCH":
                self._update(hook, _document(body))
                return 200, self._document(hook, base_url, include=False)
            if method == "DELETE":
                del self._hooks[hook.id]
                return 204, None
            raise KlaviyoApiError(405, "method_not_allowed", "Method not allowed.", method)

    # ------------------------------------------------------------------ topics
    def _topic(self, topic: str, base_url: str) -> dict:
        return {
            "type": "webhook-topic",
            "id": topic,
            "links": {"self": f"{base_url}/api/webhook-topics/{topic}/"},
        }

    def _topics(self, rest: list[str], base_url: str) -> dict:
        if not rest:
            data = [self._topic(t, base_url) for t in self.topics]
            return {"data": data, "links": {"self": f"{base_url}/api/webhook-topics/"}}
        if rest[0] not in self.topics:
            raise KlaviyoApiError(404, "not_found", "Not found.", f"No webhook topic {rest[0]}")
        topic = self._topic(rest[0], base_url)
        return {"data": topic, "links": topic["links"]}

    def _topic_ids(self, relationships: Any, required: bool) -> list[str] | None:
        rel = relationships.get("webhook-topics") if isinstance(relationships, dict) else None
        if rel is None:
            if required:
                raise _invalid("'webhook-topics' is a required relationship.")
            return None
        data = rel.get("data") if isinstance(rel, dict) else None
        if not isinstance(data, list) or not data:
            raise _invalid("A webhook needs at least one topic.")
        ids = []
        for ref in data:
            if not isinstance(ref, dict) or ref.get("type") != "webhook-topic":
                raise _invalid("Topics must be webhook-topic resource identifiers.")
            if ref.get("id") not in self.topics:
                raise _invalid(f"Unknown webhook topic {ref.get('id')!r}.")
            ids.append(ref["id"])
        return sorted(set(ids))

    # ------------------------------------------------------------------ webhooks
    def _create(self, data: dict) -> Webhook:
        attrs = data.get("attributes") or {}
        for name in ("name", "endpoint_url", "secret_key"):
            if not isinstance(attrs.get(name), str) or not attrs[name]:
                raise _invalid(f"'{name}' is a required field.")
        _check_endpoint(attrs["endpoint_url"])
        hook = Webhook(
            id=uuid.uuid4().hex[:26].upper(),
            name=attrs["name"],
            description=attrs.get("description"),
            endpoint_url=attrs["endpoint_url"],
            secret_key=attrs["secret_key"],
            topics=self._topic_ids(data.get("relationships"), required=True) or [],
        )
        self._hooks[hook.id] = hook
        return hook

    def _update(self, hook: Webhook, data: dict) -> None:
        if data.get("id") != hook.id:
            raise KlaviyoApiError(409, "conflict", "Conflict.", "The id does not match the URL.")
        attrs = data.get("attributes")
        if not isinstance(attrs, dict):
            raise _invalid("'attributes' is a required field.")
        if attrs.get("endpoint_url") is not None:
            _check_endpoint(attrs["endpoint_url"])
        if "description" in attrs:  # JSON:API: a member sent as null is set to null
            hook.description = attrs["description"]
        for name in ("name", "endpoint_url", "secret_key", "enabled"):
            if attrs.get(name) is not None:
                setattr(hook, name, attrs[name])
        topics = self._topic_ids(data.get("relationships"), required=False)
        if topics is not None:
            hook.topics = topics
        hook.updated_at = _now()

    def _resource(self, hook: Webhook, base_url: str, include: bool) -> dict:
        url = urlsplit(hook.endpoint_url)
        self_link = f"{base_url}/api/webhooks/{hook.id}/"
        topics: dict[str, Any] = {
            "links": {
                "self": f"{self_link}relationships/webhook-topics/",
                "related": f"{self_link}webhook-topics/",
            }
        }
        if include:
            topics["data"] = [{"type": "webhook-topic", "id": t} for t in hook.topics]
        return {
            "type": "webhook",
            "id": hook.id,
            "attributes": {
                "name": hook.name,
                "description": hook.description,
                "endpoint_url": f"{url.scheme}://{url.netloc}",
                "enabled": hook.enabled,
                "created_at": hook.created_at,
                "updated_at": hook.updated_at,
            },
            "relationships": {"webhook-topics": topics},
            "links": {"self": self_link},
        }

    def _included(self, hooks: Any, base_url: str) -> list[dict]:
        topics = sorted({t for hook in hooks for t in hook.topics})
        return [self._topic(t, base_url) for t in topics]

    def _document(self, hook: Webhook, base_url: str, include: bool) -> dict:
        resource = self._resource(hook, base_url, include)
        doc: dict[str, Any] = {"data": resource, "links": resource["links"]}
        if include:
            doc["included"] = self._included([hook], base_url)
        return doc


def _document(body: bytes) -> dict:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _invalid("The request body is not valid JSON.") from exc
    data = parsed.get("data") if isinstance(parsed, dict) else None
    if not isinstance(data, dict) or data.get("type") != "webhook":
        raise _invalid("The request body must be a 'webhook' resource object.")
    return data


def _check_endpoint(url: Any) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "https" or not parts.netloc:
        raise _invalid("The endpoint URL must be an https URL.")
