"""SQLAlchemy engines over psycopg 3 for the CRM database."""

from __future__ import annotations

from functools import lru_cache

import sqlalchemy as sa


def sqlalchemy_url(dsn: str, driver: str = "psycopg") -> str:
    """Turn a libpq `postgresql://` DSN into a SQLAlchemy URL for the given driver."""
    for prefix in (
        "postgresql+psycopg2://",
        "postgresql+psycopg://",
        "postgresql://",
        "postgres://",
    ):
        if dsn.startswith(prefix):
            return f"postgresql+{driver}://" + dsn[len(prefix) :]
    raise ValueError("database URL must start with postgresql://")


def libpq_dsn(url: str) -> str:
    """The plain libpq form of a SQLAlchemy or libpq URL (for psycopg.connect and psql)."""
    for prefix in ("postgresql+psycopg2://", "postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


@lru_cache(maxsize=8)
def make_engine(dsn: str) -> sa.Engine:
    """One pooled engine per DSN and process."""
    return sa.create_engine(
        sqlalchemy_url(dsn), pool_pre_ping=True, pool_size=5, max_overflow=10, future=True
    )
