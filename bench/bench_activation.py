"""Benchmark: the Klaviyo profile sync vs raw SDK bulk-import calls of the same payloads.

Seeds an embedded PostgreSQL (temp dir) with N synthetic customers (email + metrics), starts the
sandbox (Klaviyo's real rate limits on), runs one sync so every customer has a Klaviyo profile,
then for `--rounds` rounds:

1. changes every customer's metrics, so all N profiles are due (the payloads are read back);
2. raw: the same N profile resources through `Profiles.bulk_import_profiles` (jobs of at most
   10,000 profiles, 5 MB) and `get_bulk_import_profiles_job` polls until complete, the
   payload dicts built before the clock starts (the SDK's request models inside it);
3. sync: `sync_klaviyo` (reading and hashing the customers, the jobs, polls, import errors,
   state and customer_sync_logs writes).

Prints profiles/s of both per round, the medians and the ratio sync/raw (target >= 0.8).

    python bench/bench_activation.py --customers 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from openapi_client.models import ProfileImportJobCreateQuery  # type: ignore[attr-defined]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crm_pipeline.activation.client import KlaviyoWriter  # noqa: E402
from crm_pipeline.activation.plan import build_plan  # noqa: E402
from crm_pipeline.activation.sync import job_chunks, sync_klaviyo  # noqa: E402
from crm_pipeline.db.engine import make_engine  # noqa: E402
from crm_pipeline.db.migrate import migrate  # noqa: E402
from crm_pipeline.db.server import EmbeddedPostgres  # noqa: E402
from crm_pipeline.sandbox.generate import generate_store  # noqa: E402
from crm_pipeline.sandbox.server import SandboxServer  # noqa: E402
from crm_pipeline.sources.klaviyo import KlaviyoClient  # noqa: E402

SEED_SQL = """
WITH c AS (
    INSERT INTO customers (id, email, first_name)
    SELECT gen_random_uuid(), 'bench' || g || '@example.com', 'Bench'
    FROM generate_series(1, :n) AS g
    RETURNING id
)
INSERT INTO customer_metrics (customer_id, lifetime_value, predicted_ltv, churn_probability,
                              engagement_score, predicted_next_order_date)
SELECT id, 100, 150, 0.2, 50, current_date + 30 FROM c
"""
CHANGE_SQL = "UPDATE customer_metrics SET predicted_ltv = predicted_ltv + 1"


def raw_seconds(client: KlaviyoClient, resources: list[dict[str, Any]]) -> float:
    """Bulk import jobs of the same resources straight through the SDK, polled to complete."""
    chunks = _resource_chunks(resources)
    api = client.api.Profiles
    started = time.perf_counter()
    for chunk in chunks:
        # the SDK's request model is part of calling it (the sync builds the same one)
        query = ProfileImportJobCreateQuery.model_validate(
            {
                "data": {
                    "type": "profile-bulk-import-job",
                    "attributes": {"profiles": {"data": chunk}},
                }
            }
        )
        job = client._call(api.bulk_import_profiles, profile_import_job_create_query=query)
        wait = 0.2
        while True:
            page = client._call(api.get_bulk_import_profiles_job, job_id=job["data"]["id"])
            if page["data"]["attributes"]["status"] == "complete":
                break
            time.sleep(wait)
            wait = min(wait * 2, 5.0)
    return time.perf_counter() - started


def _resource_chunks(resources: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    class _Row:  # job_chunks sizes rows by their resource's JSON
        def __init__(self, resource: dict[str, Any]) -> None:
            self.resource = resource
            self.resource_json = orjson.dumps(resource).decode()

    return [[r.resource for r in chunk] for chunk in job_chunks([_Row(r) for r in resources])]  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench-activation-"))
    server = EmbeddedPostgres(root / "postgres")
    try:
        server.start()
        dsn = server.create_database("crm_bench")
        migrate(dsn)
        engine = make_engine(dsn)
        with engine.begin() as conn:
            conn.execute(sa.text(SEED_SQL), {"n": args.customers})
        store = root / "store"
        generate_store(store, customers=20, seed=1)
        with SandboxServer(store) as sandbox:
            client = KlaviyoClient("pk_bench", api_url=sandbox.url)
            writer = KlaviyoWriter(client)
            _, first = sync_klaviyo(engine, writer, "bench-setup", segments=[])
            assert first is not None and first.profiles_pushed == args.customers, first
            raw_rates, sync_rates = [], []
            for round_no in range(1, args.rounds + 1):
                with engine.begin() as conn:
                    conn.execute(sa.text(CHANGE_SQL))
                with engine.connect() as conn:
                    resources = [row.resource for row in build_plan(conn, []).profiles]
                assert len(resources) == args.customers
                raw = raw_seconds(client, resources)
                started = time.perf_counter()
                _, result = sync_klaviyo(engine, writer, f"bench-{round_no}", segments=[])
                synced = time.perf_counter() - started
                assert result is not None and result.profiles_pushed == args.customers, result
                raw_rates.append(args.customers / raw)
                sync_rates.append(args.customers / synced)
                print(
                    f"round {round_no}: raw {raw_rates[-1]:,.0f} profiles/s ({raw:.2f}s), "
                    f"sync {sync_rates[-1]:,.0f} profiles/s ({synced:.2f}s)"
                )
        raw_med, sync_med = statistics.median(raw_rates), statistics.median(sync_rates)
        print(f"customers: {args.customers}, rounds: {args.rounds}")
        print(f"raw SDK bulk import: {raw_med:,.0f} profiles/s (median)")
        print(f"klaviyo_profile_sync: {sync_med:,.0f} profiles/s (median)")
        print(f"ratio sync/raw: {sync_med / raw_med:.2f} (target >= 0.8)")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
