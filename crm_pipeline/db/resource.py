"""The Dagster resource every asset uses to reach the CRM database."""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from crm_pipeline.db.engine import make_engine
from crm_pipeline.db.migrate import migrate
from crm_pipeline.db.server import database_dsn
from crm_pipeline.env_binding import resolve

# Embedded databases whose schema this process brought up to date (once each).
_migrated: set[str] = set()


class PostgresResource(dg.ConfigurableResource):
    """CRM database: `dsn` when given (a DSN, or `env("CRM_DATABASE_URL")` read at run time),
    else the embedded server."""

    dsn: str | None = None

    def get_dsn(self) -> str:
        dsn = resolve(self.dsn)
        if dsn:
            return dsn
        dsn = database_dsn()
        if dsn not in _migrated:
            # `dagster dev` / `dagster job execute` with nothing set: nobody ran `db migrate`
            migrate(dsn)
            _migrated.add(dsn)
        return dsn

    def get_engine(self) -> sa.Engine:
        return make_engine(self.get_dsn())
