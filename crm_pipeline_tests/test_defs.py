"""The Definitions object: the asset graph, jobs and automation the team relies on."""

from typing import Any

import dagster as dg
from syrupy.assertion import SnapshotAssertion

from crm_pipeline.definitions import defs


def _keys() -> set[str]:
    return {spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()}


def test_every_stage_is_an_asset() -> None:
    assert {
        "shopify_customers",
        "shopify_orders",
        "klaviyo_profiles",
        "klaviyo_events",
        "unified_customers",
        "customer_metrics",
        "customer_segments",
        "customer_stats",
        "firestore_customer_mirror",
        "firestore_dashboard_mirror",
        "webhook_deliveries",
    } <= _keys()


def test_contract_jobs_exist_and_full_refresh_reaches_the_mirror() -> None:
    jobs = {job.name: job for job in defs.resolve_all_job_defs()}
    assert {
        "full_refresh",
        "incremental_sync",
        "process_webhooks",
        "import_customers",
        "export_customers",
    } <= set(jobs)
    full = {key.to_user_string() for key in jobs["full_refresh"].asset_layer.executable_asset_keys}
    assert {"shopify_customers", "customer_metrics", "firestore_customer_mirror"} <= full
    webhooks = {
        key.to_user_string() for key in jobs["process_webhooks"].asset_layer.executable_asset_keys
    }
    assert {"webhook_deliveries", "customer_metrics", "firestore_customer_mirror"} <= webhooks


def test_metrics_wait_for_ingestion_and_the_mirror_for_metrics() -> None:
    graph = defs.resolve_asset_graph()

    def upstream(key: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(key)).parent_keys}

    assert {"unified_customers", "shopify_orders", "klaviyo_events"} <= upstream("customer_metrics")
    # in process_webhooks the touched customers' metrics are recomputed after the deliveries
    assert "webhook_deliveries" in upstream("customer_metrics")
    assert "customer_metrics" in upstream("firestore_customer_mirror")
    assert "shopify_customers" in upstream("shopify_orders")


def test_automation_is_defined_but_off_until_turned_on() -> None:
    schedules = {s.name: s for s in defs.schedules}
    assert set(schedules) >= {"incremental_sync_schedule", "nightly_full_reconcile"}
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in schedules.values())
    assert "webhook_sensor" in {s.name for s in defs.sensors}


def test_every_asset_has_a_group_and_a_description() -> None:
    for spec in defs.resolve_all_asset_specs():
        assert spec.group_name and spec.group_name != "default", spec.key
        assert spec.description, spec.key


# Snapshots of the whole code location, as dagster-open-platform keeps them: a change to an asset,
# check, job, schedule or sensor shows up as a diff of __snapshots__/test_defs.ambr in review.
# After an intended change: pytest crm_pipeline_tests/test_defs.py --snapshot-update


def _spec_data(spec: dg.AssetSpec) -> dict[str, Any]:
    return {
        "key": spec.key.to_user_string(),
        "group": spec.group_name,
        "deps": sorted(dep.asset_key.to_user_string() for dep in spec.deps),
        "kinds": sorted(spec.kinds),
        "description": spec.description,
        "owners": list(spec.owners),
        "tags": dict(sorted(spec.tags.items())),
        "metadata": sorted(spec.metadata),
        "automation_condition": str(spec.automation_condition or ""),
    }


def test_asset_specs_snapshot(snapshot: SnapshotAssertion) -> None:
    specs = sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string())
    assert [_spec_data(spec) for spec in specs] == snapshot


def test_asset_checks_snapshot(snapshot: SnapshotAssertion) -> None:
    graph = defs.resolve_asset_graph()
    checks = [
        {
            "asset": key.asset_key.to_user_string(),
            "name": key.name,
            "blocking": spec.blocking,
            "description": spec.description,
        }
        for key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.path, k.name))
        for spec in [graph.get_check_spec(key)]
    ]
    assert checks == snapshot


def test_jobs_snapshot(snapshot: SnapshotAssertion) -> None:
    jobs = [
        {
            "name": job.name,
            "description": job.description,
            "assets": sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys),
            "ops": sorted(node.name for node in job.nodes)
            if not job.asset_layer.executable_asset_keys
            else [],
            "executor": job.executor_def.name,
        }
        for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name)
        if not job.name.startswith("__")
    ]
    assert jobs == snapshot


def test_schedules_snapshot(snapshot: SnapshotAssertion) -> None:
    schedules = [
        {
            "name": s.name,
            "job": s.job_name,
            "cron": s.cron_schedule,
            "default_status": s.default_status.value,
            "description": s.description,
        }
        for s in sorted(defs.schedules or [], key=lambda s: s.name)
    ]
    assert schedules == snapshot


def test_sensors_snapshot(snapshot: SnapshotAssertion) -> None:
    sensors = [
        {
            "name": s.name,
            "jobs": sorted(target.job_name for target in s.targets),
            "minimum_interval_seconds": s.minimum_interval_seconds,
            "default_status": s.default_status.value,
            "required_resources": sorted(s.required_resource_keys),
        }
        for s in sorted(defs.sensors or [], key=lambda s: s.name)
    ]
    assert sensors == snapshot


def test_resources_snapshot(snapshot: SnapshotAssertion) -> None:
    """Which variable each setting reads (`env:NAME`); the same whatever is set, never a value."""
    bound = {
        key: {"class": type(resource).__name__, **dict(resource)}
        for key, resource in sorted((defs.resources or {}).items())
    }
    assert bound == snapshot
