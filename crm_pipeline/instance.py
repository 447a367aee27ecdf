"""The persistent Dagster instance under CRM_HOME that every crm-pipeline command uses."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from crm_pipeline.db.engine import sqlalchemy_url
from crm_pipeline.db.server import dagster_storage_dsn
from crm_pipeline.settings import REPO_ROOT, dagster_home


def prepare_dagster_home() -> Path:
    """Write DAGSTER_HOME/dagster.yaml and export DAGSTER_HOME + the storage URL for children."""
    home = dagster_home()
    target = home / "dagster.yaml"
    if os.environ.get("CRM_DAGSTER_STORAGE", "postgres") == "sqlite":
        lines = (REPO_ROOT / "dagster.yaml").read_text().split("\n")
        start = lines.index("storage:")
        target.write_text("\n".join(lines[:start] + lines[start + 4 :]))
    else:
        shutil.copyfile(REPO_ROOT / "dagster.yaml", target)
        # dagster-postgres needs the psycopg2 dialect for its LISTEN/NOTIFY event watcher
        os.environ["CRM_DAGSTER_STORAGE_URL"] = sqlalchemy_url(dagster_storage_dsn(), "psycopg2")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
