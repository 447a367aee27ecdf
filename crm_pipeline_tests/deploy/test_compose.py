"""deploy/compose.yaml is a valid Compose file (the Compose Specification's JSON schema, after
interpolation as `docker compose` does it) and takes every secret from the environment."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
COMPOSE = REPO / "deploy" / "compose.yaml"
_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|CREDENTIALS")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?message}` (the forms the file uses)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        if env.get(name):
            return env[name]
        if operator and operator.endswith("?"):
            raise MissingVariable(f"{name}: {argument}")
        return argument if operator else ""

    return _VARIABLE.sub(replace, value)


def variables(text: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, operator, _ in _VARIABLE.findall(text):
        found.setdefault(name, set()).add(operator)
    return found


def full_environment() -> dict[str, str]:
    """A value for every variable the file requires; the others keep their defaults."""
    required = {n for n, ops in variables(COMPOSE.read_text()).items() if ":?" in ops}
    return {name: f"value-of-{name.lower()}" for name in required}


def load(env: dict[str, str]) -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env)


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    document = load(full_environment())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(document), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_an_invalid_service_is_refused_by_the_schema() -> None:
    # the schema is really applied: a misspelt key fails it
    schema = json.loads((DATA / "compose-spec.json").read_text())
    document = load(full_environment())
    document["services"]["receiver"]["helthcheck"] = document["services"]["receiver"].pop(
        "healthcheck"
    )
    assert not jsonschema.Draft7Validator(schema).is_valid(document)


def test_secrets_come_only_from_the_environment_and_are_required() -> None:
    found = variables(COMPOSE.read_text())
    secrets = {name for name in found if SECRET_NAME.search(name)}
    assert {"POSTGRES_PASSWORD", "SHOPIFY_WEBHOOK_SECRET", "ADMIN_WEBHOOK_SECRET"} <= secrets
    for name in secrets:
        assert found[name] == {":?"}, f"{name} must be ${{{name}:?...}} (no default, no blank)"
    env = full_environment()
    del env["SHOPIFY_WEBHOOK_SECRET"]
    with pytest.raises(MissingVariable, match="SHOPIFY_WEBHOOK_SECRET"):
        load(env)


def test_services_health_checks_and_volumes() -> None:
    document = load(full_environment())
    services = document["services"]
    assert {
        "postgres",
        "migrate",
        "code-location",
        "dagster-webserver",
        "dagster-daemon",
        "receiver",
        "worker",
    } <= set(services)
    assert services["postgres"]["image"].startswith("postgres:18")
    assert any("/readyz" in part for part in services["receiver"]["healthcheck"]["test"])
    assert int(services["receiver"]["deploy"]["replicas"]) >= 2
    for name in ("postgres", "code-location", "dagster-webserver", "dagster-daemon", "receiver"):
        assert services[name]["healthcheck"]["test"], name
    assert services["receiver"]["command"] == ["receiver"]
    assert services["worker"]["command"] == ["worker"]
    assert services["code-location"]["command"] == ["code-server"]
    assert set(document["volumes"]) == {"postgres-data", "dagster-storage"}
    workspace = yaml.safe_load((REPO / "deploy" / "workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    assert server["host"] in services and server["port"] == 4000


def test_container_instance_config_is_valid_for_dagster(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text((REPO / "deploy" / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "CRM_DAGSTER_STORAGE_URL"}
