"""The Definitions object: the asset graph, jobs and automation the team relies on."""

import dagster as dg

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
