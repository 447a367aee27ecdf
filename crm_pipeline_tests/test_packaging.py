"""`pip install .` (not editable) ships the migrations: `crm-pipeline db migrate` works from it.

Builds the wheel offline from a copy of the source (no build isolation, no index), installs it
into a bare target folder and runs the installed console script with only that folder on the
path, from a folder with no source tree in it, against a fresh database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg

from crm_pipeline.db.server import EmbeddedPostgres
from crm_pipeline.settings import REPO_ROOT

SOURCE_FILES = ("pyproject.toml", "setup.py", "README.md")  # those that exist
SOURCE_FOLDERS = ("crm_pipeline", "webhook_receiver", "sql")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result


def test_installed_wheel_migrates_a_fresh_database(
    embedded_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCE_FILES:
        if (REPO_ROOT / name).exists():
            shutil.copy2(REPO_ROOT / name, source / name)
    for name in SOURCE_FOLDERS:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(REPO_ROOT / name, source / name, ignore=ignore)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, source])
    (wheel,) = dist.glob("crm_pipeline-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("crm_pipeline/sql/")}
    assert shipped == {f"crm_pipeline/sql/{p.name}" for p in (REPO_ROOT / "sql").glob("*.sql")}

    site = tmp_path / "site"
    run([*pip, "install", "--no-deps", "--no-index", "--target", site, wheel])
    elsewhere = tmp_path / "elsewhere"  # no crm_pipeline/ or sql/ in the working folder
    elsewhere.mkdir()
    dsn = embedded_postgres.create_database("crm_wheel")
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "CRM_DATABASE_URL": dsn,
        "CRM_HOME": str(tmp_path / "home"),
    }
    where = run(
        [sys.executable, "-c", "import crm_pipeline; print(crm_pipeline.__file__)"],
        cwd=elsewhere,
        env=env,
    )
    assert Path(where.stdout.strip()).is_relative_to(site)
    migrated = run([str(site / "bin" / "crm-pipeline"), "db", "migrate"], cwd=elsewhere, env=env)
    assert "applied: 0001_core_schema" in migrated.stdout

    with psycopg.connect(dsn) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
        assert {"customers", "customer_sources", "orders", "webhook_events"} <= tables
        search = "search_customers(text, jsonb, text, integer, text)"
        assert conn.execute("SELECT to_regprocedure(%s)", (search,)).fetchone()[0]
    again = run([str(site / "bin" / "crm-pipeline"), "db", "migrate"], cwd=elsewhere, env=env)
    assert "schema is up to date" in again.stdout
