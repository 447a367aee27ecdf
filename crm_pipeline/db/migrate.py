"""Apply the numbered plain-SQL migrations in sql/ with yoyo (idempotent, recorded in a table)."""

from __future__ import annotations

import logging

from yoyo import get_backend, read_migrations

from crm_pipeline.db.bulk_indexes import restore_deferred_indexes
from crm_pipeline.db.engine import make_engine, sqlalchemy_url
from crm_pipeline.settings import SQL_DIR

log = logging.getLogger(__name__)


def migrate(dsn: str) -> list[str]:
    """Apply every pending migration; returns the ids applied (empty when up to date)."""
    logging.getLogger("yoyo").setLevel(logging.WARNING)
    backend = get_backend(sqlalchemy_url(dsn, "psycopg"))
    migrations = read_migrations(str(SQL_DIR))
    with backend.lock():
        pending = backend.to_apply(migrations)
        ids = [m.id for m in pending]
        if ids:
            log.info("applying migrations: %s", ", ".join(ids))
            backend.apply_migrations(pending)
    # indexes a bulk load deferred and could not rebuild (it died): rebuild them now
    engine = make_engine(dsn)
    try:
        restore_deferred_indexes(engine)
    finally:
        engine.dispose()
    return ids
