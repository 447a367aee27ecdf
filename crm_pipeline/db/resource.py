"""The Dagster resource every asset uses to reach the CRM database."""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from crm_pipeline.db.engine import make_engine
from crm_pipeline.db.server import database_dsn


class PostgresResource(dg.ConfigurableResource):
    """CRM database: `dsn` when given (bind with dg.EnvVar("CRM_DATABASE_URL")), else embedded."""

    dsn: str | None = None

    def get_dsn(self) -> str:
        return self.dsn or database_dsn()

    def get_engine(self) -> sa.Engine:
        return make_engine(self.get_dsn())
