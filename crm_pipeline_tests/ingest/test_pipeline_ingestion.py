"""Ingestion end to end: sandbox API -> SDK clients -> validation -> identity -> PostgreSQL."""

from __future__ import annotations

import logging
from collections import Counter
from math import comb
from pathlib import Path

import orjson
import sqlalchemy as sa

from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline_tests.fixtures.pipeline import (
    fingerprint,
    materialization,
    run_ingestion,
    table_counts,
)
from crm_pipeline_tests.fixtures.postgres import truncate_all

log = logging.getLogger(__name__)


def pairwise_precision_recall(truth: dict, predicted: dict) -> tuple[float, float]:
    """Pair-counting precision/recall of a clustering against the true persons."""
    keys = truth.keys() & predicted.keys()
    cells = Counter((predicted[k], truth[k]) for k in keys)
    pred_sizes = Counter(predicted[k] for k in keys)
    true_sizes = Counter(truth[k] for k in keys)
    same_both = sum(comb(n, 2) for n in cells.values())
    same_pred = sum(comb(n, 2) for n in pred_sizes.values())
    same_true = sum(comb(n, 2) for n in true_sizes.values())
    return same_both / max(same_pred, 1), same_both / max(same_true, 1)


def test_full_refresh_resolves_identities_and_is_idempotent(
    clean_db: sa.Engine, database_url: str, sandbox_10k: SandboxServer, store_10k: Path
) -> None:
    first = run_ingestion(database_url, sandbox_10k.url, full_refresh=True)
    assert first.success
    counts, prints = table_counts(clean_db), fingerprint(clean_db)
    customers = materialization(first, "shopify_customers")
    assert customers["received"] == customers["accounted"] == 10_000
    assert counts["customers"] > 9_000 and counts["orders"] > 20_000

    truth = {}
    for line in (store_10k / "_truth" / "persons.jsonl").read_bytes().splitlines():
        row = orjson.loads(line)
        truth[(row["source"], row["external_id"])] = row["person_id"]
    with clean_db.connect() as conn:
        predicted = {
            (r.source, r.external_id): r.customer_id
            for r in conn.execute(
                sa.text("SELECT source, external_id, customer_id::text FROM customer_sources")
            )
        }
    precision, recall = pairwise_precision_recall(truth, predicted)
    log.info(
        "identity resolution on 10k store: precision=%.4f recall=%.4f records=%d",
        precision,
        recall,
        len(predicted),
    )
    assert precision >= 0.99 and recall >= 0.99

    second = run_ingestion(database_url, sandbox_10k.url, full_refresh=True)
    assert second.success
    assert table_counts(clean_db) == counts
    assert fingerprint(clean_db) == prints
    again = materialization(second, "shopify_customers")
    assert again["inserted"] == again["updated"] == 0


def test_faults_and_throttling_converge_to_the_fault_free_result(
    clean_db: sa.Engine, database_url: str, store_3k: Path
) -> None:
    with SandboxServer(store_3k, klaviyo_rate_limits=False, shopify_plan="plus") as clean_server:
        assert run_ingestion(database_url, clean_server.url, full_refresh=True).success
    clean = fingerprint(clean_db)
    truncate_all(clean_db)
    # 5% 5xx, 2% 429s, GraphQL cost throttling and Klaviyo's burst/steady windows all on
    with SandboxServer(
        store_3k, fault_rate=0.05, rate_limit_429=0.02, seed=3, shopify_plan="plus"
    ) as faulty:
        assert run_ingestion(database_url, faulty.url, full_refresh=True).success
        served = dict(faulty.state.counters)
    assert fingerprint(clean_db) == clean
    log.info("faults served during the faulty run: %s", served)
    assert sum(served.values()) > 0


def test_incremental_sync_touches_only_what_changed(
    clean_db: sa.Engine, database_url: str, store_10k: Path, tmp_path: Path
) -> None:
    import shutil
    from datetime import UTC, datetime, timedelta

    from crm_pipeline.sandbox.generate import mutate_store

    store = tmp_path / "store"
    shutil.copytree(store_10k, store)
    with SandboxServer(store, klaviyo_rate_limits=False, shopify_plan="plus") as sandbox:
        assert run_ingestion(database_url, sandbox.url, full_refresh=True).success
    with clean_db.connect() as conn:
        between = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
    changed = mutate_store(store, 0.01, seed=11, now=datetime.now(UTC) - timedelta(minutes=1))
    assert len(changed.customers) == 100
    with SandboxServer(store, klaviyo_rate_limits=False, shopify_plan="plus") as sandbox:
        result = run_ingestion(database_url, sandbox.url, full_refresh=False)
    assert result.success
    customers = materialization(result, "shopify_customers")
    assert customers["mode"] == "incremental"
    assert customers["updated"] == len(changed.customers)
    # future-dated records (planted dirt) match every window and are re-quarantined, not loaded
    assert customers["inserted"] == 0
    profiles = materialization(result, "klaviyo_profiles")
    assert profiles["updated"] == len(changed.profiles)
    orders = materialization(result, "shopify_orders")
    assert orders["updated"] == len(changed.orders) and orders["inserted"] == 0
    # nothing outside the changed set was rewritten
    with clean_db.connect() as conn:
        rewritten = conn.execute(
            sa.text(
                "SELECT count(*) FROM customer_sources WHERE source = 'shopify' "
                "AND last_synced_at > :between AND external_id <> ALL(:ids)"
            ),
            {"between": between, "ids": [str(i) for i in changed.customers]},
        ).scalar_one()
    assert rewritten == 0
