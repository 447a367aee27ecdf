"""Incremental cursors: an explicit stored value per stream, advanced only after a load."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa

# Shopify's `updated_at:>` behaves like >=, clocks drift and writes land late: re-read a window.
DEFAULT_OVERLAP = timedelta(minutes=10)


T = TypeVar("T")


class SyncCursor:
    """The `sync_state` row of one stream (e.g. "shopify.customers")."""

    def __init__(self, engine: sa.Engine, stream: str, overlap: timedelta = DEFAULT_OVERLAP):
        self.engine = engine
        self.stream = stream
        self.overlap = overlap

    def get(self) -> datetime | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT cursor_value FROM sync_state WHERE stream = :s"), {"s": self.stream}
            ).scalar_one_or_none()

    def since(self) -> datetime | None:
        """Where the next incremental pull starts (cursor minus the overlap window)."""
        value = self.get()
        return value - self.overlap if value else None

    def advance(self, value: datetime | None, details: dict[str, Any] | None = None) -> None:
        """Move forward only (a re-run of an older window never moves the cursor back)."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    """
                    INSERT INTO sync_state (stream, cursor_value, details)
                    VALUES (:s, :v, CAST(:d AS jsonb))
                    ON CONFLICT (stream) DO UPDATE SET
                        cursor_value = greatest(sync_state.cursor_value, excluded.cursor_value),
                        details = excluded.details
                    """
                ),
                {"s": self.stream, "v": value, "d": orjson.dumps(details or {}).decode()},
            )


class HighWaterMark:
    """Tracks the newest timestamp flowing through a stream, capped at the pull's start.

    The cap matters: a record stamped in the future (bad clock, planted dirt) must not push the
    cursor past data that has not happened yet.
    """

    def __init__(self, started_at: datetime | None = None) -> None:
        self.started_at = started_at or datetime.now(UTC)
        self.value: datetime | None = None
        self.count = 0

    def track(self, records: Iterable[T], key: str = "source_updated_at") -> Iterator[T]:
        for record in records:
            self.count += 1
            ts = getattr(record, key, None)
            if ts is not None and ts <= self.started_at and (self.value is None or ts > self.value):
                self.value = ts
            yield record
