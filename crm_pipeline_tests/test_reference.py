"""docs/reference.md stays true: every command, environment variable and route the code has is
named in it, and every table it names exists in sql/.

The reference is what users rely on; a command, variable or route added without a line there is
invisible to them, so these checks read the code itself (the typer app, the sources, the FastAPI
app) rather than a list kept beside it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from crm_pipeline.cli import app as cli_app
from crm_pipeline.settings import REPO_ROOT, SQL_DIR
from webhook_receiver.main import create_app
from webhook_receiver.settings import WebhookSettings

REFERENCE = REPO_ROOT / "docs" / "reference.md"
CODE_DIRS = (REPO_ROOT / "crm_pipeline", REPO_ROOT / "webhook_receiver")

# os.environ.get("X"), os.environ["X"], os.getenv("X"), dg.EnvVar("X"), and the receiver's
# settings aliases _env("X", ...).
_READS = re.compile(r'(?:environ\.get\(|environ\[|getenv\(|EnvVar\(|_env\()\s*"([A-Z][A-Z0-9_]+)"')
# Module constants naming a variable read elsewhere: IMPORTS_ENV = "CRM_IMPORTS_DIR".
_NAMED = re.compile(r'^[A-Z0-9_]*(?:_ENV|_VARIABLE)\s*=\s*"([A-Z][A-Z0-9_]+)"', re.MULTILINE)


def _reference() -> str:
    return REFERENCE.read_text()


def _section(number: int) -> str:
    text = _reference()
    start = text.index(f"\n## {number}.")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def env_vars_in_code() -> set[str]:
    names: set[str] = set()
    for folder in CODE_DIRS:
        for path in folder.rglob("*.py"):
            source = path.read_text()
            names.update(_READS.findall(source))
            names.update(_NAMED.findall(source))
    return names


def cli_commands() -> set[str]:
    """Every leaf command of `crm-pipeline`, as typed: 'demo', 'db url', 'webhooks replay'."""
    root = typer.main.get_command(cli_app)
    found: set[str] = set()

    def walk(command: Any, prefix: tuple[str, ...]) -> None:
        subcommands = getattr(command, "commands", None)  # a group (typer vendors click)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, (*prefix, name))
        else:
            found.add(" ".join(prefix))

    walk(root, ())
    return found


def receiver_routes() -> set[str]:
    """'METHOD /path' for every API route of the receiver app, '/path' for FastAPI's own pages."""
    settings = WebhookSettings(demo=True, database_url="postgresql://reference@127.0.0.1:1/none")
    app = create_app(settings)  # nothing connects before the lifespan starts
    routes = {
        f"{method.upper()} {path}"
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    # the top-level plain routes: /openapi.json, /docs, /redoc (API routes sit in routers)
    routes.update(r.path for r in app.routes if isinstance(getattr(r, "path", None), str))
    return routes


def test_the_scanners_find_what_they_look_for() -> None:
    # Guards the guards: a broken regex or walk would make the checks below pass vacuously.
    assert {"CRM_HOME", "CRM_DATABASE_URL", "CRM_TOMBSTONE_KEY", "SHOPIFY_WEBHOOK_SECRET"} <= (
        env_vars_in_code()
    )
    assert {"demo", "db migrate", "sandbox generate", "webhooks replay", "import"} <= (
        cli_commands()
    )
    assert {"POST /webhooks/shopify", "GET /healthz", "/openapi.json"} <= receiver_routes()


@pytest.mark.parametrize("name", sorted(env_vars_in_code()))
def test_every_environment_variable_the_code_reads_is_documented(name: str) -> None:
    assert f"`{name}`" in _section(1), f"{name} is read by the code but not in docs/reference.md"


@pytest.mark.parametrize("command", sorted(cli_commands()))
def test_every_command_is_documented(command: str) -> None:
    section = _section(2)
    top_level = " " not in command
    spelled = f"`crm-pipeline {command}" if top_level else command
    assert spelled in section, f"`crm-pipeline {command}` is not in docs/reference.md section 2"


@pytest.mark.parametrize("route", sorted(receiver_routes()))
def test_every_route_is_documented(route: str) -> None:
    assert f"`{route}" in _section(4) or f"{route}`" in _section(4), (
        f"{route} is served but not in docs/reference.md section 4"
    )


def test_every_documented_table_and_view_exists_in_sql() -> None:
    section = _section(3)
    tables = re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE)
    views = re.findall(r"`([a-z_0-9]+)` \(", section.split("Views for analysts", 1)[1])
    sql = "\n".join(p.read_text() for p in sorted(Path(SQL_DIR).glob("*.sql")))
    assert len(tables) >= 10
    for table in tables:
        assert re.search(rf"CREATE TABLE (IF NOT EXISTS )?{table} \(", sql), table
    for view in views:
        assert f"CREATE OR REPLACE VIEW {view} AS" in sql, view
