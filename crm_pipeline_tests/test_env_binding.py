"""Resources bind their variables unconditionally and read them when a run uses them.

An unset optional variable reaches the resource's fallback (CRM_DATABASE_URL: the embedded
server), a missing required one fails the run naming what to set, and no value reaches the UI.
"""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster_shared.serdes import serialize_value

import crm_pipeline.definitions as definitions
from crm_pipeline.db import resource as db_resource
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.definitions import build_definitions, resources
from crm_pipeline.env_binding import env, resolve

VARIABLES = (
    "CRM_DATABASE_URL",
    "SHOPIFY_SHOP",
    "SHOPIFY_ACCESS_TOKEN",
    "SHOPIFY_API_VERSION",
    "SHOPIFY_API_URL",
    "KLAVIYO_API_KEY",
    "KLAVIYO_API_URL",
    "GOOGLE_CLOUD_PROJECT",
    "FIRESTORE_EMULATOR_HOST",
)
EMBEDDED = "postgresql://embedded-stand-in/crm"


@pytest.fixture
def no_variables(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def embedded_stand_in(monkeypatch: pytest.MonkeyPatch) -> str:
    """The embedded server's DSN without starting it (already migrated in this process)."""
    monkeypatch.setattr(db_resource, "database_dsn", lambda: EMBEDDED)
    monkeypatch.setattr(db_resource, "_migrated", {EMBEDDED})
    return EMBEDDED


def test_the_sentinel_reads_its_variable_when_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_TEST_BINDING", raising=False)
    bound = env("CRM_TEST_BINDING")
    assert resolve(bound) is None
    monkeypatch.setenv("CRM_TEST_BINDING", "")
    assert resolve(bound) is None  # empty counts as unset, as it always did
    monkeypatch.setenv("CRM_TEST_BINDING", "postgresql://set/later")
    assert resolve(bound) == "postgresql://set/later"
    assert resolve("postgresql://literal/db") == "postgresql://literal/db"
    assert resolve(None) is None


def test_bindings_do_not_depend_on_what_is_set_at_import(
    no_variables: pytest.MonkeyPatch,
) -> None:
    unset = {key: dict(resource) for key, resource in resources().items()}
    for name in VARIABLES:
        no_variables.setenv(name, f"value-of-{name}")
    assert {key: dict(resource) for key, resource in resources().items()} == unset
    assert unset["postgres"]["dsn"] == "env:CRM_DATABASE_URL"
    assert unset["shopify"]["access_token"] == "env:SHOPIFY_ACCESS_TOKEN"


@dg.asset
def dsn_probe(postgres: PostgresResource) -> str:
    return postgres.get_dsn()


def _probe_dsn() -> str:
    result = (
        dg.Definitions(assets=[dsn_probe], resources=resources())
        .resolve_implicit_global_asset_job_def()
        .execute_in_process()
    )
    assert result.success
    return result.output_for_node("dsn_probe")


def test_unset_database_url_reaches_the_embedded_server_in_a_run(
    no_variables: pytest.MonkeyPatch, embedded_stand_in: str
) -> None:
    # a dg.EnvVar binding would fail this launch ("...which is not set")
    assert _probe_dsn() == embedded_stand_in
    no_variables.setenv("CRM_DATABASE_URL", "")
    assert _probe_dsn() == embedded_stand_in


def test_database_url_set_after_import_is_used_by_the_run(
    no_variables: pytest.MonkeyPatch, embedded_stand_in: str
) -> None:
    no_variables.setenv("CRM_DATABASE_URL", "postgresql://from-the-environment/crm")
    assert _probe_dsn() == "postgresql://from-the-environment/crm"


def test_missing_credentials_fail_at_run_time_naming_what_to_set(
    no_variables: pytest.MonkeyPatch,
) -> None:
    bound = resources()  # importing and binding needs nothing
    with pytest.raises(dg.Failure, match="set SHOPIFY_SHOP and SHOPIFY_ACCESS_TOKEN"):
        bound["shopify"].process_config_and_initialize().get_client()
    with pytest.raises(dg.Failure, match="set KLAVIYO_API_KEY"):
        bound["klaviyo"].process_config_and_initialize().get_client()
    no_variables.setenv("SHOPIFY_SHOP", "crm-test.myshopify.com")
    with pytest.raises(dg.Failure, match="set SHOPIFY_ACCESS_TOKEN \\("):
        bound["shopify"].process_config_and_initialize().get_client()


def test_sandbox_urls_are_optional_and_need_no_credentials(
    no_variables: pytest.MonkeyPatch,
) -> None:
    no_variables.setenv("SHOPIFY_API_URL", "http://127.0.0.1:9/")
    no_variables.setenv("SHOPIFY_API_VERSION", "2024-10")
    no_variables.setenv("KLAVIYO_API_URL", "http://127.0.0.1:9/")
    bound = resources()
    shopify = bound["shopify"].process_config_and_initialize().get_client()
    assert shopify.api_version == "2024-10"
    bound["klaviyo"].process_config_and_initialize().get_client()


def test_secret_values_never_reach_the_ui(no_variables: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        no_variables.setenv(name, f"secret-{name.lower()}")
    snapshot = serialize_value(RepositorySnap.from_def(build_definitions().get_repository_def()))
    assert not [name for name in VARIABLES if f"secret-{name.lower()}" in snapshot]
    assert "env:SHOPIFY_ACCESS_TOKEN" in snapshot  # what is shown: where the value comes from


def test_an_installed_wheel_loads_the_same_definitions(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """Without pyproject.toml next to the package the loader is given the defs module."""

    def summary(d: dg.Definitions) -> tuple:
        return (
            sorted(s.key.to_user_string() for s in d.resolve_all_asset_specs()),
            sorted(j.name for j in d.resolve_all_job_defs()),
            sorted(s.name for s in d.schedules or []),
            sorted(s.name for s in d.sensors or []),
            sorted(d.resources or {}),
        )

    from_checkout = summary(build_definitions())
    monkeypatch.setattr(definitions, "PROJECT_ROOT", tmp_path)  # no pyproject.toml there
    assert summary(build_definitions()) == from_checkout
