"""Each API-bound pull reports its rate-limit floor; Klaviyo's predictions are an opt-in stream."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest
import sqlalchemy as sa

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.klaviyo.resources import KlaviyoResource
from crm_pipeline.defs.shopify.resources import ShopifyResource
from crm_pipeline.sandbox.generate import generate_store
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline_tests.fixtures.pipeline import INGESTION_ASSETS, PULLS, materialization

FLOOR_KEYS = {"api_requests", "api_floor_seconds", "api_elapsed_seconds", "api_floor_ratio"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    root = tmp_path_factory.mktemp("budget") / "store"
    generate_store(root, customers=400, seed=11)
    with SandboxServer(root, klaviyo_rate_limits=False, shopify_plan="plus") as server:
        yield server


def _run(dsn: str, url: str, *, predictive: str | None = None) -> dg.ExecuteInProcessResult:
    resources = {
        "postgres": PostgresResource(dsn=dsn),
        "shopify": ShopifyResource(api_url=url),
        "klaviyo": KlaviyoResource(api_url=url, predictive_analytics=predictive),
    }
    run_config = {"ops": {name: {"config": {"full_refresh": True}} for name in PULLS}}
    result = dg.materialize(INGESTION_ASSETS, resources=resources, run_config=run_config)
    assert result.success
    return result


def _with_predictions(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM customers "
                "WHERE custom_attributes #> '{klaviyo,predictive_analytics}' IS NOT NULL"
            )
        ).scalar_one()


def test_pulls_report_floor_and_default_profiles_skip_predictions(
    clean_db: sa.Engine, database_url: str, sandbox: SandboxServer
) -> None:
    result = _run(database_url, sandbox.url)
    for pull in PULLS:
        meta = materialization(result, pull)
        assert FLOOR_KEYS <= meta.keys(), pull
        assert meta["api_requests"] >= 1, pull
        assert meta["api_floor_seconds"] >= 0 and meta["api_elapsed_seconds"] > 0, pull
        if meta["api_floor_seconds"] > 0:
            ratio = meta["api_elapsed_seconds"] / meta["api_floor_seconds"]
            assert meta["api_floor_ratio"] == pytest.approx(ratio, rel=0.01, abs=0.002), pull
    profiles = materialization(result, "klaviyo_profiles")
    # 400 customers' profiles at 100 a page: several pages, all under the 700/min bucket
    assert profiles["api_requests_profiles"] >= 3
    assert "api_requests_profiles_predictive" not in profiles
    assert profiles["api_floor_seconds"] > 0
    events = materialization(result, "klaviyo_events")
    assert events["api_requests_events"] >= 1 and events["api_requests_metrics"] >= 1
    assert materialization(result, "shopify_customers")["api_cost_points"] > 0
    assert _with_predictions(clean_db) == 0


def test_configured_predictive_stream_stores_predictions(
    clean_db: sa.Engine, database_url: str, sandbox: SandboxServer
) -> None:
    result = _run(database_url, sandbox.url, predictive="true")
    profiles = materialization(result, "klaviyo_profiles")
    assert profiles["api_requests_profiles_predictive"] >= 3
    assert profiles["api_requests_profiles"] >= 3
    assert profiles["predictive_received"] == profiles["received"]
    assert _with_predictions(clean_db) > 0
