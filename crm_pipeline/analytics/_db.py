"""Small connection helpers shared by the analytics modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa

Bind = sa.Engine | sa.Connection


@contextmanager
def transaction(bind: Bind) -> Iterator[sa.Connection]:
    """A connection in a transaction: a new one for an Engine, the caller's for a Connection.

    Lets the asset run metrics, scores and segments in one transaction while tests and the CLI
    can pass an engine.
    """
    if isinstance(bind, sa.Engine):
        with bind.begin() as conn:
            yield conn
    else:
        yield bind


def as_utc(moment: datetime | None) -> datetime:
    """`moment` as an aware UTC datetime (naive values are taken as UTC); now when None."""
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
