"""Deletions are confirmed at the source, and a record seen alive after its deletion comes back."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import graphql
import orjson
import pytest
import sqlalchemy as sa

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.klaviyo import assets as klaviyo_assets
from crm_pipeline.defs.klaviyo.resources import KlaviyoResource
from crm_pipeline.defs.shopify import assets as shopify_assets
from crm_pipeline.defs.shopify.resources import ShopifyResource
from crm_pipeline.ingest.customers import CustomerLoader, reconcile_deletions
from crm_pipeline.mapping.shopify import map_customer
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline.sources.klaviyo import KlaviyoClient
from crm_pipeline.sources.shopify import ShopifyClient
from crm_pipeline_tests.fixtures.pipeline import materialization
from crm_pipeline_tests.sources.conftest import DELETED, write_store
from crm_pipeline_tests.webhooks.test_processing_support import (
    at,
    customer_by_shopify_id,
    land,
    run,
    shopify_customer,
)

SHOPIFY_SCHEMA = Path("/work/shared/reference/shopify-admin-schema/admin_schema_2024-10.json.gz")


@contextmanager
def sandbox(store: Path, **config: object) -> Iterator[SandboxServer]:
    shutil.rmtree(store / ".sandbox-index", ignore_errors=True)  # the store was just rewritten
    with SandboxServer(store, bulk_seconds=0.05, klaviyo_rate_limits=False, **config) as server:
        yield server


def keep_customers(store: Path, rows: list[dict], drop: set[int]) -> None:
    path = store / "shopify" / "customers.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows if r["id"] not in drop))


def pull(
    dsn: str, server: SandboxServer, asset: dg.AssetsDefinition = shopify_assets.shopify_customers
) -> dg.ExecuteInProcessResult:
    """A full pull of one asset, as `full_refresh` runs it."""
    return dg.materialize(
        [asset],
        resources={
            "postgres": PostgresResource(dsn=dsn),
            "shopify": ShopifyResource(api_url=server.url),
            "klaviyo": KlaviyoResource(api_url=server.url),
        },
        run_config={"ops": {asset.key.path[-1]: {"config": {"full_refresh": True}}}},
        raise_on_error=False,
    )


def live(engine: sa.Engine, source: str = "shopify") -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.text(
                    "SELECT s.external_id FROM customer_sources s "
                    "JOIN customers c ON c.id = s.customer_id "
                    "WHERE s.source = :source AND s.deleted_at IS NULL AND c.deleted_at IS NULL"
                ),
                {"source": source},
            ).scalars()
        )


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, dict[str, list[dict]]]:
    return tmp_path, write_store(tmp_path)


def test_a_pull_revives_a_deleted_record_with_its_history(
    clean_db: sa.Engine, database_url: str, store: tuple[Path, dict]
) -> None:
    root, rows = store
    customers = rows["customers"]
    with sandbox(root) as server:
        assert pull(database_url, server).success
    everyone = {str(c["id"]) for c in customers}
    assert live(clean_db) == everyone
    before = customer_by_shopify_id(clean_db, 1005)
    with clean_db.begin() as conn:  # history of that person
        conn.execute(
            sa.text(
                "INSERT INTO customer_segments (customer_id, segment_name, segment_type, "
                "assigned_by) VALUES (:id, 'vip_watch', 'custom', 'manual')"
            ),
            {"id": before.id},
        )
        conn.execute(
            sa.text(
                "INSERT INTO customer_activities (customer_id, activity_type, occurred_at, "
                "source, external_id) VALUES (:id, 'page_view', now(), 'manual', 'a1')"
            ),
            {"id": before.id},
        )

    # the shop's answer leaves 1005 out (and the point lookup agrees): it is soft-deleted
    keep_customers(root, rows["customers"], {1005})
    with sandbox(root) as server:
        assert pull(database_url, server).success
    assert live(clean_db) == everyone - {"1005"}
    assert customer_by_shopify_id(clean_db, 1005).deleted_at is not None

    # a newer pull sees it alive again: same customer, history still attached
    keep_customers(root, rows["customers"], set())
    with sandbox(root) as server:
        result = pull(database_url, server)
    assert result.success
    assert live(clean_db) == everyone
    after = customer_by_shopify_id(clean_db, 1005)
    assert after.id == before.id and after.deleted_at is None
    assert after.email == before.email
    with clean_db.connect() as conn:
        held = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM customer_segments WHERE customer_id = :id), "
                "(SELECT count(*) FROM customer_activities WHERE customer_id = :id)"
            ),
            {"id": before.id},
        ).one()
    assert tuple(held) == (1, 1)
    assert materialization(result, "shopify_customers")["revived"] == 1


def test_a_short_bulk_result_is_not_taken_for_deletions(
    clean_db: sa.Engine, database_url: str, store: tuple[Path, dict]
) -> None:
    root, rows = store
    with sandbox(root) as server:
        assert pull(database_url, server).success
    # Shopify answers COMPLETED with 15 customers fewer than it counts: nobody is deleted
    with sandbox(root, drop_last=15) as server:
        result = pull(database_url, server)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "objects but the shop counted" in str(failure[0].event_specific_data)
    assert live(clean_db) == {str(c["id"]) for c in rows["customers"]}
    with clean_db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM reconcile_seen")).scalar_one() == 0


def test_profiles_missing_from_a_pull_but_alive_at_klaviyo_are_kept(
    clean_db: sa.Engine, database_url: str, store: tuple[Path, dict]
) -> None:
    root, rows = store
    with sandbox(root) as server:
        assert pull(database_url, server, klaviyo_assets.klaviyo_profiles).success
    # the listing silently ends 12 profiles early; get-profile says they all still exist
    with sandbox(root, drop_last=12) as server:
        result = pull(database_url, server, klaviyo_assets.klaviyo_profiles)
    assert result.success
    assert live(clean_db, "klaviyo") == {p["id"] for p in rows["profiles"]}
    meta = materialization(result, "klaviyo_profiles")
    assert (meta["reconcile_sources_deleted"], meta["reconcile_confirmed_alive"]) == (0, 12)


def test_reconcile_deletes_only_what_the_point_lookup_says_is_gone(
    clean_db: sa.Engine, store: tuple[Path, dict]
) -> None:
    root, rows = store
    gone = {
        **rows["customers"][0],
        "id": next(iter(DELETED)),
        "addresses": [],
        "default_address": None,
    }
    known = [*rows["customers"], gone]
    CustomerLoader(clean_db, origin="api pull").load(map_customer(c) for c in known)
    seen = known[: len(known) // 2 + 1]  # the pull saw a little more than half
    CustomerLoader(clean_db, origin="api pull", reconcile_run_id="r1").load(
        map_customer(c) for c in seen
    )
    with sandbox(root) as server:
        client = ShopifyClient("sandbox", "token", api_url=server.url)
        result = reconcile_deletions(clean_db, "shopify", "r1", still_alive=client.customers_alive)
    # only the customer the shop deleted goes; the others it confirmed alive stay
    assert result["sources_deleted"] == 1
    assert result["confirmed_alive"] == len(known) - len(seen) - 1
    assert live(clean_db) == {str(c["id"]) for c in rows["customers"]}


def test_point_lookups_answer_alive_and_gone(store: tuple[Path, dict]) -> None:
    root, rows = store
    with sandbox(root) as server:
        shop = ShopifyClient("sandbox", "token", api_url=server.url)
        ids = [str(c["id"]) for c in rows["customers"]]
        gone = [str(d) for d in DELETED] + ["999999"]
        assert shop.customers_alive(ids + gone) == set(ids)  # 39 alive, in one batch
        assert shop.customers_count() == {"count": len(ids), "precision": "EXACT"}
        klaviyo = KlaviyoClient("pk_test", api_url=server.url)
        assert klaviyo.profile_exists(rows["profiles"][3]["id"])
        assert not klaviyo.profile_exists("01NOSUCHPROFILE")


def test_point_lookup_queries_are_valid_in_the_admin_schema() -> None:
    from crm_pipeline.sources.shopify import CUSTOMER_NODES, CUSTOMERS_COUNT

    introspection = json.loads(gzip.decompress(SHOPIFY_SCHEMA.read_bytes()))
    schema = graphql.build_client_schema(introspection.get("data", introspection))
    for query in (CUSTOMER_NODES, CUSTOMERS_COUNT):
        assert graphql.validate(schema, graphql.parse(query)) == []


def test_a_webhook_newer_than_the_delete_revives_a_stale_one_does_not(
    clean_db: sa.Engine,
) -> None:
    engine = clean_db
    land(engine, "shopify", "customers/create", shopify_customer(7, at(0)), triggered_at=at(0))
    land(engine, "shopify", "customers/delete", {"id": 7}, triggered_at=at(5))
    run(engine)
    first = customer_by_shopify_id(engine, 7)
    assert first.deleted_at is not None
    # an update from before the delete was processed is no proof of life
    land(engine, "shopify", "customers/update", shopify_customer(7, at(2)), triggered_at=at(2))
    assert run(engine).outcomes["ignored_deleted"] == 1
    # one after it is: the record and its customer come back
    now = datetime.now(UTC)
    land(
        engine,
        "shopify",
        "customers/update",
        shopify_customer(7, now, first_name="Back"),
        triggered_at=now,
    )
    assert run(engine).outcomes["revived"] == 1
    back = customer_by_shopify_id(engine, 7)
    assert back.id == first.id and back.deleted_at is None and back.first_name == "Back"


def test_staff_deletions_and_redactions_stay_when_the_source_record_returns(
    clean_db: sa.Engine,
) -> None:
    engine = clean_db
    CustomerLoader(engine, origin="api pull").load(
        [map_customer(shopify_customer(i, at(0))) for i in (1, 2)]
    )
    with engine.begin() as conn:
        # 1: deleted by staff, then its source record went; 2: the source alone took it down
        conn.execute(
            sa.text(
                "UPDATE customers SET deleted_at = now() WHERE id = "
                "(SELECT customer_id FROM customer_sources WHERE external_id = '1')"
            )
        )
    CustomerLoader(engine, origin="api pull", reconcile_run_id="r").load([])
    reconcile_deletions(engine, "shopify", "r", still_alive=lambda ids: set(), min_seen_ratio=0)
    assert customer_by_shopify_id(engine, 1).deleted_at is not None
    assert customer_by_shopify_id(engine, 2).deleted_at is not None
    report = CustomerLoader(engine, origin="api pull", observed_at=datetime.now(UTC)).load(
        [map_customer(shopify_customer(i, at(0))) for i in (1, 2)]
    )
    assert report.revived == 1
    assert customer_by_shopify_id(engine, 1).deleted_at is not None  # staff's decision stands
    assert customer_by_shopify_id(engine, 2).deleted_at is None
