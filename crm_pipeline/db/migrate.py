"""Apply the numbered plain-SQL migrations in sql/ with yoyo (idempotent, recorded in a table)."""

from __future__ import annotations

import contextlib
import logging
from importlib import resources
from pathlib import Path

from yoyo import get_backend, read_migrations

from crm_pipeline.db.bulk_indexes import restore_deferred_indexes
from crm_pipeline.db.engine import make_engine, sqlalchemy_url
from crm_pipeline.settings import REPO_ROOT, SQL_DIR

log = logging.getLogger(__name__)


class MigrationsNotFound(RuntimeError):
    """Neither a source checkout's sql/ nor the copy shipped in the package is there."""


def migrations_dir() -> contextlib.AbstractContextManager[Path]:
    """The folder of migrations: sql/ of a source checkout (also editable installs), else the
    crm_pipeline/sql copy a wheel ships (setup.py maps sql/ there)."""
    if SQL_DIR.is_dir() and (REPO_ROOT / "pyproject.toml").is_file():
        return contextlib.nullcontext(SQL_DIR)
    shipped = resources.files("crm_pipeline") / "sql"
    if not shipped.is_dir():
        raise MigrationsNotFound(
            f"no migrations: neither {SQL_DIR} (source checkout) nor crm_pipeline/sql (installed "
            "package) exists; reinstall crm-pipeline"
        )
    return resources.as_file(shipped)


def migrate(dsn: str) -> list[str]:
    """Apply every pending migration; returns the ids applied (empty when up to date)."""
    logging.getLogger("yoyo").setLevel(logging.WARNING)
    backend = get_backend(sqlalchemy_url(dsn, "psycopg"))
    # yoyo reads each file when it applies it: keep the folder open until then
    with migrations_dir() as folder, backend.lock():
        pending = backend.to_apply(read_migrations(str(folder)))
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
