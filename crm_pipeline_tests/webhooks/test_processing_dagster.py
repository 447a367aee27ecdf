"""The webhook asset, its dead-letter check and the sensor, run in-process against Postgres."""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

import crm_pipeline.defs.webhooks
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.webhooks.assets import webhook_deliveries
from crm_pipeline.defs.webhooks.checks import webhook_deliveries_no_dead_letters
from crm_pipeline.defs.webhooks.sensors import webhook_sensor
from crm_pipeline_tests.webhooks.test_processing_support import at, land, shopify_customer

# what the webhooks folder registers
defs = dg.load_definitions_from_package_module(crm_pipeline.defs.webhooks)


def test_definitions_load() -> None:
    # process_webhooks also refreshes metrics and the mirror, so it resolves in the full graph
    from crm_pipeline.definitions import defs as all_defs

    job = all_defs.resolve_job_def("process_webhooks")
    assert dg.AssetKey("webhook_deliveries") in job.asset_layer.executable_asset_keys
    assert webhook_sensor.name in {s.name for s in defs.sensors}


def test_asset_processes_and_check_reports_dead_letters(
    clean_db: sa.Engine, database_url: str
) -> None:
    land(clean_db, "shopify", "customers/create", shopify_customer(40, at(0)), triggered_at=at(0))
    land(clean_db, "shopify", "customers/update", {"no": "id"}, triggered_at=at(1))
    land(clean_db, "shopify", "shop/update", {"id": 1}, triggered_at=at(2))
    result = dg.materialize(
        [webhook_deliveries, webhook_deliveries_no_dead_letters],
        resources={"postgres": PostgresResource(dsn=database_url)},
    )
    assert result.success
    meta = result.asset_materializations_for_node("webhook_deliveries")[0].metadata
    assert meta["applied"].value == 1 and meta["dead"].value == 1
    assert meta["unknown_topics"].value == 1 and meta["touched_customer_ids"].value == 1
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and check.metadata["dead_letters"].value == 1


def test_sensor_requests_a_run_only_when_work_waits(clean_db: sa.Engine, database_url: str) -> None:
    resources = {"postgres": PostgresResource(dsn=database_url)}
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources=resources)
        assert isinstance(webhook_sensor(ctx), dg.SkipReason)
        land(
            clean_db, "shopify", "customers/create", shopify_customer(41, at(0)), triggered_at=at(0)
        )
        result = webhook_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert len(result.run_requests) == 1
        cursor = result.cursor
        again = webhook_sensor(
            dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor)
        )
        assert isinstance(again, dg.SkipReason)
