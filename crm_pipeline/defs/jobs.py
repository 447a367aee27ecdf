"""Jobs and schedules over the whole asset graph (CONTRACT.md section 2)."""

from __future__ import annotations

from typing import Any

import dagster as dg

PULL_ASSETS = ("shopify_customers", "shopify_orders", "klaviyo_profiles", "klaviyo_events")
PIPELINE_GROUPS = ("ingestion", "identity", "analytics", "mirror")
# Steps run in one process: on a small machine, a fresh interpreter per step (the multiprocess
# executor) costs more than the parallelism between the Shopify and Klaviyo branches gains.


def _pipeline_selection() -> dg.AssetSelection:
    return dg.AssetSelection.groups(*PIPELINE_GROUPS)


def _pull_config(full_refresh: bool) -> dict[str, Any]:
    return {"ops": {name: {"config": {"full_refresh": full_refresh}} for name in PULL_ASSETS}}


def jobs() -> list[dg.UnresolvedAssetJobDefinition]:
    return [
        dg.define_asset_job(
            "full_refresh",
            selection=_pipeline_selection(),
            config=_pull_config(True),
            executor_def=dg.in_process_executor,
            description="Everything from the sources down to the mirror: bulk pulls, delete "
            "reconcile, identity, metrics, segments, Firestore.",
        ),
        dg.define_asset_job(
            "incremental_sync",
            selection=_pipeline_selection(),
            config=_pull_config(False),
            executor_def=dg.in_process_executor,
            description="Pull what changed since each stream's cursor and recompute what it "
            "touched.",
        ),
    ]


def schedules() -> list[dg.ScheduleDefinition]:
    return [
        dg.ScheduleDefinition(
            name="incremental_sync_schedule",
            job_name="incremental_sync",
            cron_schedule="*/15 * * * *",
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description="Incremental pulls every 15 minutes.",
        ),
        dg.ScheduleDefinition(
            name="nightly_full_reconcile",
            job_name="full_refresh",
            cron_schedule="0 2 * * *",
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description="Nightly full refresh: catches deletes and anything incremental missed.",
        ),
    ]
