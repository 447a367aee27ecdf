"""The `full_refresh` job of the code location, end to end: sandbox -> PostgreSQL -> Firestore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.definitions import build_definitions
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline_tests.fixtures.pipeline import fingerprint, table_counts


@pytest.fixture
def pipeline_env(
    monkeypatch: pytest.MonkeyPatch, store_3k: Path, database_url: str, firestore_emulator: str
) -> Iterator[SandboxServer]:
    """The environment `dagster job execute` would see, pointed at the sandbox and emulator."""
    with SandboxServer(store_3k, klaviyo_rate_limits=False, shopify_plan="plus") as sandbox:
        monkeypatch.setenv("SHOPIFY_API_URL", sandbox.url)
        monkeypatch.setenv("KLAVIYO_API_URL", sandbox.url)
        yield sandbox


def sync_log_errors(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM customer_sync_logs WHERE firestore_status = 'failed'")
        ).scalar_one()


def test_full_refresh_twice_lands_everything_once(
    clean_db: sa.Engine, pipeline_env: SandboxServer, firestore_client: firestore.Client
) -> None:
    job = build_definitions().resolve_job_def("full_refresh")
    assert job.execute_in_process().success
    counts, prints = table_counts(clean_db), fingerprint(clean_db)
    errors = sync_log_errors(clean_db)
    with clean_db.connect() as conn:
        live = conn.execute(
            sa.text(
                "SELECT count(*) FROM customers WHERE deleted_at IS NULL AND merged_into IS NULL"
            )
        ).scalar_one()
        with_metrics = conn.execute(sa.text("SELECT count(*) FROM customer_metrics")).scalar_one()
        duplicate_sources = conn.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT source, external_id FROM customer_sources "
                "GROUP BY 1, 2 HAVING count(*) > 1) d"
            )
        ).scalar_one()
        # writes the emulator refused in the first run are retried by the next one, by design
        retry_due = conn.execute(
            sa.text("SELECT count(*) FROM firestore_mirror_state WHERE status = 'failed'")
        ).scalar_one()
    assert live > 3000 and with_metrics >= live and duplicate_sources == 0
    mirrored = firestore_client.collection("customers").count().get()[0][0].value
    assert mirrored == live - retry_due

    second = build_definitions().resolve_job_def("full_refresh").execute_in_process()
    assert second.success
    assert table_counts(clean_db) == counts
    assert fingerprint(clean_db) == prints
    assert sync_log_errors(clean_db) == errors
    mirror = second.asset_materializations_for_node("firestore_customer_mirror")[0].metadata
    assert mirror["written"].value == retry_due, "an unchanged store must write no document"
    assert firestore_client.collection("customers").count().get()[0][0].value == live
