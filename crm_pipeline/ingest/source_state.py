"""Event-time state of delta webhooks, so deltas converge whatever order they are applied in.

Shopify 2025-01 sends tags, consent and purchase totals on their own topics, and deliveries can
arrive late, twice or out of order. Each tag and each consent channel is a last-writer-wins
register keyed by the time of the change (a full customer record observes every tag at its
`updated_at`); `profile` (what survivorship reads) is derived from the registers after each
write. The state lives in customer_sources.webhook_state, which source pulls never overwrite.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.normalize import parse_timestamp, split_tags


def _newer(current: dict[str, Any] | None, at: datetime, value: Any) -> bool:
    """Does an observation at `at` replace `current`? Ties resolve by value, not by arrival."""
    if current is None:
        return True
    held = parse_timestamp(current.get("at"))
    if held is None or at > held:
        return True
    if at < held:
        return False
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS) > orjson.dumps(
        current.get("value"), option=orjson.OPT_SORT_KEYS
    )


class SourceState:
    """The registers of one source record (customer_sources.webhook_state)."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = copy.deepcopy(data or {})

    def _set(self, group: str, key: str, value: Any, at: datetime) -> None:
        registers = self.data.setdefault(group, {})
        if _newer(registers.get(key), at, value):
            registers[key] = {"value": value, "at": at.isoformat()}

    # -------------------------------------------------------------- observations
    def tag(self, tag: str, present: bool, at: datetime) -> None:
        self._set("tags", tag, present, at)

    def tags_full(self, tags: list[str], at: datetime) -> None:
        """A record carrying its whole tag list: listed tags present, other known tags absent."""
        listed = set(tags)
        for tag in sorted(listed | set(self.data.get("tags", {}))):
            self.tag(tag, tag in listed, at)

    def consent(self, channel: str, subscribed: bool, at: datetime) -> None:
        self._set("consent", channel, subscribed, at)

    def value(self, name: str, value: Any, at: datetime) -> None:
        self._set("values", name, value, at)

    def shopify_record(self, raw: dict[str, Any], at: datetime | None) -> None:
        """What a Shopify customer record (old or new payload model) says about the registers."""
        if at is None:
            return
        if "tags" in raw:
            self.tags_full(split_tags(raw.get("tags")), at)
        channels = (("email", "email_marketing_consent"), ("sms", "sms_marketing_consent"))
        for channel, key in channels:
            block = raw.get(key)
            if isinstance(block, dict) and block.get("state"):
                when = parse_timestamp(block.get("consent_updated_at")) or at
                self.consent(channel, str(block["state"]).lower() == "subscribed", when)
        if "email_marketing_consent" not in raw and "accepts_marketing" in raw:
            when = parse_timestamp(raw.get("accepts_marketing_updated_at")) or at
            self.consent("email", bool(raw.get("accepts_marketing")), when)

    # -------------------------------------------------------------- derived profile
    def fold(self, profile: dict[str, Any]) -> dict[str, Any]:
        """The profile with the registers applied (what survivorship should see)."""
        out = dict(profile)
        tags = self.data.get("tags")
        if tags:
            out["tags"] = sorted(t for t, r in tags.items() if r["value"])
        consent = self.data.get("consent", {})
        if "email" in consent:
            out["accepts_email_marketing"] = consent["email"]["value"]
            out["email_consent_at"] = consent["email"]["at"]
        if "sms" in consent:
            out["accepts_sms_marketing"] = consent["sms"]["value"]
        values = self.data.get("values", {})
        if values:
            attributes = dict(out.get("attributes") or {})
            shopify = dict(attributes.get("shopify") or {})
            for name, register in sorted(values.items()):
                shopify[name] = register["value"]
            attributes["shopify"] = shopify
            out["attributes"] = attributes
        return out


def load_source(conn: sa.Connection, source: str, external_id: str) -> Any:
    """The source row, locked for this transaction (state updates are read-modify-write)."""
    return conn.execute(
        sa.text(
            "SELECT id, customer_id::text AS customer_id, source_data, profile, webhook_state, "
            "source_updated_at, content_hash, deleted_at FROM customer_sources "
            "WHERE source = :source AND external_id = :ext FOR UPDATE"
        ),
        {"source": source, "ext": external_id},
    ).one_or_none()


def save_folded(conn: sa.Connection, source_row_id: int, state: SourceState) -> None:
    """Store the registers and re-derive the profile from the (possibly just loaded) record."""
    profile = conn.execute(
        sa.text("SELECT profile FROM customer_sources WHERE id = :id"), {"id": source_row_id}
    ).scalar_one()
    conn.execute(
        sa.text(
            "UPDATE customer_sources SET webhook_state = CAST(:state AS jsonb), "
            "profile = CAST(:profile AS jsonb) WHERE id = :id"
        ),
        {
            "id": source_row_id,
            "state": orjson.dumps(state.data).decode(),
            "profile": orjson.dumps(state.fold(profile), default=str).decode(),
        },
    )
