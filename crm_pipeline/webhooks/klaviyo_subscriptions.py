"""`crm-pipeline webhooks register --source klaviyo`: one Klaviyo system webhook for the receiver.

Klaviyo's Webhooks API offers event topics (`event:klaviyo.<metric>`) only for Klaviyo's own
metrics; we subscribe `KLAVIYO_WEBHOOK_TOPICS`, whose deliveries `topics.klaviyo_item` applies
as activities. We keep one webhook per receiver address, recognised by its description: the
same address and topics leave it alone, changed topics (or a disabled webhook) are updated, and
topics the account does not offer are reported instead of requested. Deliveries are signed with
`KLAVIYO_WEBHOOK_SECRET`, the secret the receiver verifies `Klaviyo-Signature` with.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from crm_pipeline.mapping.klaviyo import KLAVIYO_WEBHOOK_TOPICS
from crm_pipeline.sources.errors import SourceError
from crm_pipeline.sources.klaviyo_webhooks import KlaviyoWebhook, KlaviyoWebhooksApi

WEBHOOK_NAME = "crm-pipeline"


class RegistrationError(Exception):
    """Registration cannot go ahead; the message says what to set or change."""


def description_for(address: str) -> str:
    """How our webhook for `address` is described, and so recognised again."""
    return f"crm-pipeline deliveries to {address}"


@dataclass
class KlaviyoPlan:
    """What `register` will do: create, update (with the topic change) or keep one webhook."""

    address: str
    action: str  # "create" | "update" | "keep"
    topics: set[str]
    webhook: KlaviyoWebhook | None = None
    unavailable: set[str] = field(default_factory=set)

    def lines(self) -> list[str]:
        out = []
        if self.action == "create":
            out.append(f"create webhook {WEBHOOK_NAME} -> {self.address}")
            out += [f"  + {topic}" for topic in sorted(self.topics)]
        elif self.action == "update" and self.webhook is not None:
            out.append(f"update webhook {self.webhook.id} -> {self.address}")
            out += [f"  + {t}" for t in sorted(self.topics - self.webhook.topics)]
            out += [f"  - {t}" for t in sorted(self.webhook.topics - self.topics)]
        elif self.webhook is not None:
            out.append(f"keep webhook {self.webhook.id} -> {self.address} (topics unchanged)")
        if self.action == "update" and self.webhook is not None and not self.webhook.enabled:
            out.append("  enable (it was disabled)")
        out += [f"not offered by this Klaviyo account: {t}" for t in sorted(self.unavailable)]
        return out


def _ours(webhook: KlaviyoWebhook, address: str) -> bool:
    # Klaviyo answers the endpoint URL truncated to scheme and host; the description is whole
    return webhook.description == description_for(address) or webhook.endpoint_url == address


def plan(api: KlaviyoWebhooksApi, address: str) -> KlaviyoPlan:
    """Compare the account's webhooks with the topics we handle; changes nothing."""
    parts = urlsplit(address)
    if parts.scheme != "https" or not parts.netloc:
        raise RegistrationError(f"Klaviyo delivers only to https URLs, not {address!r}")
    offered = api.topics()
    wanted = set(KLAVIYO_WEBHOOK_TOPICS) & offered
    unavailable = set(KLAVIYO_WEBHOOK_TOPICS) - offered
    if not wanted:
        raise RegistrationError("this Klaviyo account offers none of the topics we handle")
    existing = next((w for w in api.webhooks() if _ours(w, address)), None)
    if existing is None:
        return KlaviyoPlan(address, "create", wanted, unavailable=unavailable)
    action = "keep" if existing.topics == wanted and existing.enabled else "update"
    return KlaviyoPlan(address, action, wanted, existing, unavailable)


def apply(api: KlaviyoWebhooksApi, todo: KlaviyoPlan, secret: str) -> KlaviyoWebhook | None:
    """Carry the plan out; returns the webhook created or updated (None when kept)."""
    described = (WEBHOOK_NAME, description_for(todo.address), todo.address, secret, todo.topics)
    if todo.action == "create":
        return api.create(*described)
    if todo.action == "update" and todo.webhook is not None:
        return api.update(todo.webhook.id, *described)
    return None


def register_from_env(address: str, *, dry_run: bool, echo: Callable[[str], None]) -> KlaviyoPlan:
    """`register` against the account of KLAVIYO_API_KEY / KLAVIYO_API_URL (the CLI's path)."""
    import dagster as dg

    from crm_pipeline.definitions import resources

    try:
        # process_config_and_initialize resolves the config outside a Dagster run, as at launch
        client = resources()["klaviyo"].process_config_and_initialize().get_client()
    except dg.Failure as exc:
        raise RegistrationError(exc.description or str(exc)) from exc
    try:
        return register(KlaviyoWebhooksApi(client), address, dry_run=dry_run, echo=echo)
    except SourceError as exc:  # e.g. a key without webhooks:write scope (403)
        raise RegistrationError(f"Klaviyo Webhooks API: {exc}") from exc


def register(
    api: KlaviyoWebhooksApi, address: str, *, dry_run: bool, echo: Callable[[str], None]
) -> KlaviyoPlan:
    """Plan, print the plan, and (unless `dry_run`) apply it with KLAVIYO_WEBHOOK_SECRET."""
    secret = os.environ.get("KLAVIYO_WEBHOOK_SECRET") or ""
    if not secret and not dry_run:
        raise RegistrationError(
            "KLAVIYO_WEBHOOK_SECRET is not set: Klaviyo signs deliveries with it and the "
            "receiver verifies them with the same value"
        )
    todo = plan(api, address)
    for line in todo.lines():
        echo(line)
    if dry_run:
        echo("dry run: nothing changed")
        return todo
    done = apply(api, todo, secret)
    if done is not None:
        echo(f"{todo.action}d webhook {done.id}")
    return todo
