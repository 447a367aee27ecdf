"""Jobs over the whole asset graph, from the sources down to the mirror (docs/reference.md)."""

from __future__ import annotations

import dagster as dg

from crm_pipeline.defs.pipeline.executor import execution_config, pipeline_executor
from crm_pipeline.executors import fan_out_executor

PULL_ASSETS = ("shopify_customers", "shopify_orders", "klaviyo_profiles", "klaviyo_events")
PIPELINE_GROUPS = ("ingestion", "identity", "analytics", "activation", "mirror")
# In process unless a run asks for the overlap (executor.py): at 5k customers on 2 cores a
# process per step cost more than overlapping the pulls saved (docs/loading.md, bench_overlap.py)
PIPELINE_OVERLAP = False
# On Kubernetes CRM_DAGSTER_EXECUTOR=k8s gives each step its own pod (crm_pipeline/executors.py).
EXECUTOR = fan_out_executor()


def _pipeline_selection() -> dg.AssetSelection:
    return dg.AssetSelection.groups(*PIPELINE_GROUPS)


def _pull_config(full_refresh: bool) -> dict:
    config: dict = {
        "ops": {name: {"config": {"full_refresh": full_refresh}} for name in PULL_ASSETS}
    }
    if EXECUTOR is pipeline_executor:  # the k8s executor has its own config (docs/deploying.md)
        config["execution"] = execution_config(PIPELINE_OVERLAP)
    return config


full_refresh = dg.define_asset_job(
    "full_refresh",
    selection=_pipeline_selection(),
    config=_pull_config(True),
    executor_def=EXECUTOR,
    description="Everything from the sources down to the mirror: bulk pulls, delete "
    "reconcile, identity, metrics, segments, Firestore.",
)

incremental_sync = dg.define_asset_job(
    "incremental_sync",
    selection=_pipeline_selection(),
    config=_pull_config(False),
    executor_def=EXECUTOR,
    description="Pull what changed since each stream's cursor and recompute what it touched.",
)
