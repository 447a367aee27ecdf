"""The Dagster side of the mirror: assets, check and repair job run in-process."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa
from google.cloud import firestore

import crm_pipeline.defs.firestore_mirror
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.firestore_mirror.assets import (
    firestore_customer_mirror,
    firestore_dashboard_mirror,
)
from crm_pipeline.defs.firestore_mirror.checks import firestore_customer_mirror_consistent
from crm_pipeline.defs.firestore_mirror.jobs import repair_firestore_mirror
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource
from crm_pipeline.firestore.documents import CUSTOMERS
from crm_pipeline_tests.firestore.seed import customer_id, seed_customers
from crm_pipeline_tests.fixtures.firestore import TEST_PROJECT

# what the firestore_mirror folder registers
defs = dg.load_definitions_from_package_module(crm_pipeline.defs.firestore_mirror)

UPSTREAM = [
    dg.AssetSpec(key) for key in ("customer_metrics", "customer_segments", "customer_stats")
]


@pytest.fixture
def resources(
    clean_db: sa.Engine, database_url: str, firestore_emulator: str
) -> dict[str, dg.ConfigurableResource]:
    seed_customers(clean_db, 12)
    return {
        "postgres": PostgresResource(dsn=database_url),
        "firestore": FirestoreResource(
            project=TEST_PROJECT, emulator_host=firestore_emulator, batch_size=5, write_threads=2
        ),
    }


def test_definitions_graph() -> None:
    bound = dg.Definitions.merge(
        defs,
        dg.Definitions(
            resources={
                "postgres": PostgresResource(dsn="postgresql://crm@/crm"),
                "firestore": FirestoreResource(emulator_host="127.0.0.1:1"),
            }
        ),
    )
    graph = bound.resolve_asset_graph()
    mirror = dg.AssetKey("firestore_customer_mirror")
    assert graph.get(mirror).parent_keys == {
        dg.AssetKey("customer_metrics"),
        dg.AssetKey("customer_segments"),
        # consent withdrawn in Klaviyo reaches the mirror in the same run
        dg.AssetKey("klaviyo_consent"),
    }
    assert graph.get(dg.AssetKey("firestore_dashboard_mirror")).parent_keys >= {
        dg.AssetKey("customer_stats")
    }
    assert graph.get(mirror).group_name == "mirror"
    assert bound.resolve_job_def("repair_firestore_mirror") is not None
    assert {c.name for c in graph.asset_check_keys} == {"firestore_customer_mirror_consistent"}


def test_assets_materialize_and_check_passes(
    resources: dict[str, dg.ConfigurableResource], firestore_client: firestore.Client
) -> None:
    result = dg.materialize(
        [
            firestore_customer_mirror,
            firestore_dashboard_mirror,
            firestore_customer_mirror_consistent,
            *UPSTREAM,
        ],
        resources=resources,
        selection=[firestore_customer_mirror, firestore_dashboard_mirror],
    )
    assert result.success
    metadata = result.asset_materializations_for_node("firestore_customer_mirror")[0].metadata
    assert metadata["written"].value == 12 and metadata["failed"].value == 0
    assert metadata["docs_per_s"].value > 0
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [
        ("firestore_customer_mirror_consistent", True)
    ]
    assert firestore_client.document("stats/current").get().to_dict()["total_customers"] == 12


def test_repair_job_fixes_drift(
    resources: dict[str, dg.ConfigurableResource], firestore_client: firestore.Client
) -> None:
    assert dg.materialize(
        [firestore_customer_mirror, *UPSTREAM],
        resources=resources,
        selection=[firestore_customer_mirror],
    ).success
    firestore_client.collection(CUSTOMERS).document(customer_id(2)).update({"status": "vip"})
    result = repair_firestore_mirror.execute_in_process(resources=resources)
    assert result.success
    output = result.output_for_node("repair_drifted_customers")
    assert output == 1
    doc = firestore_client.collection(CUSTOMERS).document(customer_id(2)).get().to_dict()
    assert doc["status"] == "blocked"
