"""Jobs over the whole asset graph, from the sources down to the mirror (docs/reference.md)."""

from __future__ import annotations

import dagster as dg

from crm_pipeline.executors import fan_out_executor

PULL_ASSETS = ("shopify_customers", "shopify_orders", "klaviyo_profiles", "klaviyo_events")
PIPELINE_GROUPS = ("ingestion", "identity", "analytics", "activation", "mirror")
# Steps run in one process: on a small machine, a fresh interpreter per step (the multiprocess
# executor) costs more than the parallelism between the Shopify and Klaviyo branches gains. On
# Kubernetes CRM_DAGSTER_EXECUTOR=k8s gives each step its own pod (crm_pipeline/executors.py).


def _pipeline_selection() -> dg.AssetSelection:
    return dg.AssetSelection.groups(*PIPELINE_GROUPS)


def _pull_config(full_refresh: bool) -> dict:
    return {"ops": {name: {"config": {"full_refresh": full_refresh}} for name in PULL_ASSETS}}


full_refresh = dg.define_asset_job(
    "full_refresh",
    selection=_pipeline_selection(),
    config=_pull_config(True),
    executor_def=fan_out_executor(),
    description="Everything from the sources down to the mirror: bulk pulls, delete "
    "reconcile, identity, metrics, segments, Firestore.",
)

incremental_sync = dg.define_asset_job(
    "incremental_sync",
    selection=_pipeline_selection(),
    config=_pull_config(False),
    executor_def=fan_out_executor(),
    description="Pull what changed since each stream's cursor and recompute what it touched.",
)
