"""The persistent Dagster instance under CRM_HOME that every crm-pipeline command uses.

The repo's `dagster.yaml` holds the settings every instance shares and no storage, so that plain
`dagster dev` in the repo root works with nothing set. The persistent instance adds run and event
storage on PostgreSQL here.
"""

from __future__ import annotations

import os
from pathlib import Path

from crm_pipeline.db.engine import sqlalchemy_url
from crm_pipeline.db.server import dagster_storage_dsn
from crm_pipeline.settings import REPO_ROOT, dagster_home

STORAGE_URL_VARIABLE = "CRM_DAGSTER_STORAGE_URL"

# dagster-postgres reads the URL from the environment at launch, so no secret lands in the file.
POSTGRES_STORAGE = f"""
storage:
  postgres:
    postgres_url:
      env: {STORAGE_URL_VARIABLE}
"""


def write_instance_yaml(home: Path, postgres_storage: bool = True) -> Path:
    """DAGSTER_HOME/dagster.yaml: the repo's shared settings, plus Postgres storage if asked."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    text = (REPO_ROOT / "dagster.yaml").read_text()
    target.write_text(text + POSTGRES_STORAGE if postgres_storage else text)
    return target


def prepare_dagster_home() -> Path:
    """Write DAGSTER_HOME/dagster.yaml and export DAGSTER_HOME + the storage URL for children."""
    home = dagster_home()
    postgres = os.environ.get("CRM_DAGSTER_STORAGE", "postgres") != "sqlite"
    write_instance_yaml(home, postgres_storage=postgres)
    if postgres:
        # dagster-postgres needs the psycopg2 dialect for its LISTEN/NOTIFY event watcher
        os.environ[STORAGE_URL_VARIABLE] = sqlalchemy_url(dagster_storage_dsn(), "psycopg2")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
