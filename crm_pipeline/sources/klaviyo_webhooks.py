"""Klaviyo's Webhooks API through the SDK: the topics an account offers and its webhooks.

Calls go through `KlaviyoClient` so they share its key, revision header, timeouts and retry
policy (webhook endpoints allow 1 request/s: the 429s they answer are waited out). Klaviyo
never echoes a webhook's secret and truncates its endpoint URL in answers, so a webhook is
recognised by the description we gave it, not by the URL alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openapi_client.models import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    WebhookCreateQuery,
    WebhookPartialUpdateQuery,
)

from crm_pipeline.sources.klaviyo import KlaviyoClient


@dataclass(frozen=True)
class KlaviyoWebhook:
    """A system webhook as Klaviyo reports it."""

    id: str
    name: str
    description: str | None
    endpoint_url: str
    enabled: bool
    topics: frozenset[str]


def _topic_refs(topics: set[str] | frozenset[str]) -> dict[str, Any]:
    return {"data": [{"type": "webhook-topic", "id": t} for t in sorted(topics)]}


def _webhook(resource: dict[str, Any]) -> KlaviyoWebhook:
    attrs = resource.get("attributes") or {}
    refs = ((resource.get("relationships") or {}).get("webhook-topics") or {}).get("data") or []
    return KlaviyoWebhook(
        id=resource["id"],
        name=attrs.get("name") or "",
        description=attrs.get("description"),
        endpoint_url=attrs.get("endpoint_url") or "",
        enabled=bool(attrs.get("enabled")),
        topics=frozenset(ref["id"] for ref in refs),
    )


class KlaviyoWebhooksApi:
    """The webhook endpoints of one Klaviyo account."""

    def __init__(self, client: KlaviyoClient) -> None:
        self.client = client
        self.api = client.api.Webhooks

    def topics(self) -> set[str]:
        """Topic ids this account can subscribe (`event:klaviyo.opened_email`, ...)."""
        page = self.client._call(self.api.get_webhook_topics)
        return {topic["id"] for topic in page.get("data") or []}

    def webhooks(self) -> list[KlaviyoWebhook]:
        """Every webhook of the account, with its topics."""
        page = self.client._call(self.api.get_webhooks, include=["webhook-topics"])
        return [_webhook(resource) for resource in page.get("data") or []]

    def create(
        self, name: str, description: str, endpoint_url: str, secret: str, topics: set[str]
    ) -> KlaviyoWebhook:
        query = WebhookCreateQuery.from_dict(
            {
                "data": {
                    "type": "webhook",
                    "attributes": {
                        "name": name,
                        "description": description,
                        "endpoint_url": endpoint_url,
                        "secret_key": secret,
                    },
                    "relationships": {"webhook-topics": _topic_refs(topics)},
                }
            }
        )
        page = self.client._call(self.api.create_webhook, webhook_create_query=query)
        return _webhook(page["data"])

    def update(
        self,
        webhook_id: str,
        name: str,
        description: str,
        endpoint_url: str,
        secret: str,
        topics: set[str],
    ) -> KlaviyoWebhook:
        """Set every attribute (the SDK sends omitted ones as null) and exactly `topics`."""
        query = WebhookPartialUpdateQuery.from_dict(
            {
                "data": {
                    "type": "webhook",
                    "id": webhook_id,
                    "attributes": {
                        "name": name,
                        "description": description,
                        "endpoint_url": endpoint_url,
                        "secret_key": secret,
                        "enabled": True,
                    },
                    "relationships": {"webhook-topics": _topic_refs(topics)},
                }
            }
        )
        page = self.client._call(
            self.api.update_webhook, id=webhook_id, webhook_partial_update_query=query
        )
        return _webhook(page["data"])
