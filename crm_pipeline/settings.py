"""Where local state lives and how the environment is read (docs/reference.md section 1)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = REPO_ROOT / "sql"


def crm_home() -> Path:
    """The folder for local state: embedded Postgres, sandbox store, emulator logs, DAGSTER_HOME."""
    home = Path(os.environ.get("CRM_HOME") or REPO_ROOT / ".crm").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def dagster_home() -> Path:
    path = crm_home() / "dagster"
    path.mkdir(parents=True, exist_ok=True)
    return path


def exports_dir() -> Path:
    path = crm_home() / "exports"
    path.mkdir(parents=True, exist_ok=True)
    return path
