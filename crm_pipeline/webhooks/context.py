"""What a topic handler gets (one transaction, the loaders bound to it) and what it returns."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from crm_pipeline.ingest.activities import ActivityLoader
from crm_pipeline.ingest.customers import CustomerLoader
from crm_pipeline.ingest.orders import OrderLoader
from crm_pipeline.normalize import parse_timestamp
from crm_pipeline.webhooks.queue import Delivery


class PermanentError(Exception):
    """The delivery can never apply (malformed payload): dead letter at once, no retries."""


class UnknownSubject(Exception):
    """The customer or order the delivery is about is not known yet; it may still arrive.

    Retried with backoff; after the grace period it is permanent (dead letter).
    """


@dataclass
class Outcome:
    """What applying one delivery did; `outcome` lands in webhook_events.outcome."""

    outcome: str = "applied"
    touched: set[str] = field(default_factory=set)


class BoundEngine:
    """Stands in for an Engine so the ingest loaders write inside the delivery's transaction.

    Every `begin()` is a savepoint on the one connection, so a delivery's effect and its `done`
    mark commit (or roll back) together.
    """

    def __init__(self) -> None:
        self.conn: sa.Connection | None = None

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        assert self.conn is not None, "BoundEngine used outside a delivery"
        with self.conn.begin_nested():
            yield self.conn


class Loaders:
    """One set of ingest loaders per processing run (their validation schemas are built once)."""

    def __init__(self, run_id: str | None, now: datetime | None = None) -> None:
        self.bound = BoundEngine()
        bound: Any = self.bound
        self.shopify_customers = CustomerLoader(bound, origin="webhook", run_id=run_id, now=now)
        self.klaviyo_customers = CustomerLoader(bound, origin="webhook", run_id=run_id, now=now)
        self.manual_customers = CustomerLoader(bound, origin="webhook", run_id=run_id, now=now)
        self.orders = OrderLoader(bound, origin="webhook", run_id=run_id, now=now)
        self.activities = ActivityLoader(bound, origin="webhook", run_id=run_id, now=now)

    def bind(self, conn: sa.Connection | None, delivery_id: int | None) -> None:
        """Point the loaders at one delivery's transaction (None: between deliveries).

        Their quarantine rows commit on their own (the delivery may roll back; the record of
        what was refused must not) and carry the delivery's id.
        """
        self.bound.conn = conn
        for loader in (
            self.shopify_customers,
            self.klaviyo_customers,
            self.manual_customers,
            self.orders,
            self.activities,
        ):
            loader.quarantine_engine = conn.engine if conn is not None else None
            loader.webhook_event_id = delivery_id

    def customers(self, source: str) -> CustomerLoader:
        return {
            "shopify": self.shopify_customers,
            "klaviyo": self.klaviyo_customers,
            "manual": self.manual_customers,
        }[source]


@dataclass
class ApplyContext:
    """One delivery being applied inside `conn`'s transaction."""

    conn: sa.Connection
    delivery: Delivery
    loaders: Loaders
    exports_dir: Any = None
    unknown_subject_grace: timedelta = timedelta(hours=1)

    @property
    def payload(self) -> Any:
        return self.delivery.payload

    def event_time(self) -> datetime:
        """When the change happened: the payload's own time, else the sender's triggered_at."""
        payload = self.delivery.payload if isinstance(self.delivery.payload, dict) else {}
        for key in ("occurredAt", "occurred_at"):
            parsed = parse_timestamp(payload.get(key))
            if parsed:
                return parsed
        return self.delivery.triggered_at or self.delivery.received_at or datetime.now(UTC)
