"""The analytics definitions load, and the assets and export job run in-process."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

import crm_pipeline.defs.analytics
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.analytics.assets import customer_metrics, customer_segments, customer_stats
from crm_pipeline.defs.analytics.checks import (
    customer_metrics_non_negative_consistent,
    customer_segments_plausible_sizes,
    customer_segments_single_value_segment,
)
from crm_pipeline_tests.analytics.seed import AS_OF, seed_store

# what the analytics folder registers (the loader of crm_pipeline.definitions finds the same)
defs = dg.load_definitions_from_package_module(crm_pipeline.defs.analytics)


def bound(dsn: str = "postgresql://unused@/crm") -> dg.Definitions:
    """The domain defs with the resource the central Definitions binds."""
    return dg.Definitions.merge(
        defs, dg.Definitions(resources={"postgres": PostgresResource(dsn=dsn)})
    )


def test_definitions_graph() -> None:
    repo = bound().get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"customer_metrics", "customer_segments", "customer_stats"} <= keys
    graph = repo.asset_graph
    assert dg.AssetKey("shopify_orders") in graph.get(dg.AssetKey("customer_metrics")).parent_keys
    assert graph.get(dg.AssetKey("customer_stats")).parent_keys == {
        dg.AssetKey("customer_segments"),
        dg.AssetKey("order_attribution"),  # the LTV-by-acquisition-channel chart
    }
    assert repo.get_job("export_customers")


def test_assets_materialize_with_checks(
    clean_db: sa.Engine, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_EXPORTS_DIR", str(tmp_path))  # the job writes only inside it
    seed_store(clean_db, customers=70, seed=51)
    resources = {"postgres": PostgresResource(dsn=database_url)}
    config = {"as_of": AS_OF.isoformat(), "full_recompute": False}
    result = dg.materialize(
        [
            customer_metrics,
            customer_segments,
            customer_stats,
            customer_metrics_non_negative_consistent,
            customer_segments_single_value_segment,
            customer_segments_plausible_sizes,
        ],
        resources=resources,
        run_config={
            "ops": {
                "customer_metrics": {"config": config},
                "customer_segments": {"config": config},
            }
        },
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 3 and all(c.passed for c in checks)
    meta = result.asset_materializations_for_node("customer_metrics")[0].metadata
    assert meta["customers_computed"].value == 70
    stats = result.asset_materializations_for_node("customer_stats")[0].metadata
    assert stats["total_customers"].value == 70
    assert "snapshot" in stats

    # an incremental run right after has nothing to do
    again = dg.materialize([customer_metrics], resources=resources)
    meta = again.asset_materializations_for_node("customer_metrics")[0].metadata
    assert meta["mode"].value == "incremental"

    out = tmp_path / "vip.jsonl"
    job = bound(database_url).get_job_def("export_customers")
    run = job.execute_in_process(
        run_config={
            "ops": {
                "export_customers_op": {
                    "config": {"out": str(out), "format": "jsonl", "filters": {"tags": ["promo"]}}
                }
            }
        },
    )
    assert run.success and out.exists()
