"""full_refresh and incremental_sync run in process by default and, when a run asks for it,
overlap the API-bound pulls while CPU-bound steps run one at a time (defs/pipeline/executor.py)."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.system_config.objects import ResolvedRunConfig

from crm_pipeline.definitions import defs
from crm_pipeline.defs.pipeline.executor import RESOURCE_TAG, execution_config
from crm_pipeline.defs.pipeline.jobs import PULL_ASSETS

CPU_ASSETS = (
    "unified_customers",
    "customer_metrics",
    "customer_segments",
    "customer_stats",
    "firestore_customer_mirror",
    "firestore_dashboard_mirror",
)
JOBS = ("full_refresh", "incremental_sync")


def _execution(job_name: str, run_config: dict) -> dict:
    job = defs.resolve_job_def(job_name)
    return ResolvedRunConfig.build(job, run_config).execution.execution_engine_config


@pytest.mark.parametrize("job_name", JOBS)
def test_pipeline_jobs_run_in_process_unless_asked(job_name: str) -> None:
    assert defs.resolve_job_def(job_name).executor_def is dg.multi_or_in_process_executor
    assert set(_execution(job_name, {})) == {"in_process"}


@pytest.mark.parametrize("job_name", JOBS)
def test_overlap_switch_limits_cpu_bound_steps_to_one(job_name: str) -> None:
    # a partial run config keeps the job's pull config (full_refresh stays a full pull)
    job = defs.resolve_job_def(job_name)
    resolved = ResolvedRunConfig.build(job, {"execution": execution_config(overlap=True)})
    multiprocess = resolved.execution.execution_engine_config["multiprocess"]
    assert multiprocess["max_concurrent"] >= 2  # the two pull branches side by side
    assert {"key": RESOURCE_TAG, "value": "cpu", "limit": 1} in multiprocess[
        "tag_concurrency_limits"
    ]
    assert resolved.ops["shopify_orders"].config["full_refresh"] is (job_name == "full_refresh")


def _op_tags(asset: str) -> dict[str, str]:
    return dict(defs.resolve_assets_def(asset).op.tags)


@pytest.mark.parametrize("asset", PULL_ASSETS)
def test_pulls_are_tagged_api_bound(asset: str) -> None:
    assert _op_tags(asset)[RESOURCE_TAG] == "api"


@pytest.mark.parametrize("asset", CPU_ASSETS)
def test_identity_analytics_and_mirror_are_tagged_cpu_bound(asset: str) -> None:
    assert _op_tags(asset)[RESOURCE_TAG] == "cpu"


def test_the_full_mirror_check_is_cpu_bound() -> None:
    from crm_pipeline.defs.firestore_mirror.checks import firestore_customer_mirror_consistent

    assert dict(firestore_customer_mirror_consistent.op.tags)[RESOURCE_TAG] == "cpu"


def test_identity_waits_for_the_pulls_it_reads() -> None:
    graph = defs.resolve_asset_graph()
    upstream = {k.to_user_string() for k in graph.get(dg.AssetKey("unified_customers")).parent_keys}
    assert {"shopify_customers", "shopify_orders", "klaviyo_profiles"} <= upstream
