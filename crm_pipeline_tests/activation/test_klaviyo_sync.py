"""Acceptance of the Klaviyo reverse sync (issue 13): `full_refresh` with the sync enabled pushes
every identifiable customer's CRM properties and exactly each segment's members, a second run
writes nothing, a change writes exactly what changed, a retried run fires no event twice, and
every request sent and answer received conforms to Klaviyo's OpenAPI description.

Klaviyo's state is read back through the sandbox's API, never from its memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import pytest
import sqlalchemy as sa
from google.cloud import firestore
from typer.testing import CliRunner

from crm_pipeline.activation.client import KlaviyoWriter
from crm_pipeline.activation.settings import (
    DEFAULT_SEGMENTS,
    METRIC_ENTERED_SEGMENT,
    METRIC_NEW_CUSTOMER,
    list_name,
)
from crm_pipeline.activation.sync import sync_klaviyo
from crm_pipeline.cli import app as cli_app
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.definitions import build_definitions
from crm_pipeline.defs.activation.assets import klaviyo_profile_sync
from crm_pipeline.defs.klaviyo.resources import KlaviyoResource
from crm_pipeline.sandbox.generate import generate_store
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline_tests.activation import helpers
from crm_pipeline_tests.contracts.recording_proxy import RecordingProxy
from crm_pipeline_tests.fixtures.firestore import TEST_PROJECT
from crm_pipeline_tests.fixtures.pipeline import materialization
from crm_pipeline_tests.fixtures.postgres import truncate_all


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("activation") / "store"
    generate_store(path, customers=300, seed=13)
    return path


@pytest.fixture(scope="module")
def synced(
    store: Path, engine: sa.Engine, database_url: str, firestore_emulator: str
) -> Iterator[tuple[SandboxServer, RecordingProxy, dg.ExecuteInProcessResult]]:
    """One `full_refresh` with KLAVIYO_SYNC_ENABLED=1, Klaviyo traffic through a recorder."""
    truncate_all(engine)
    with (
        SandboxServer(store, klaviyo_rate_limits=False) as sandbox,
        RecordingProxy(sandbox.url) as proxy,
        pytest.MonkeyPatch.context() as env,
    ):
        env.setenv("SHOPIFY_API_URL", sandbox.url)
        env.setenv("KLAVIYO_API_URL", proxy.url)
        env.setenv("KLAVIYO_SYNC_ENABLED", "1")
        result = build_definitions().resolve_job_def("full_refresh").execute_in_process()
        assert result.success
        yield sandbox, proxy, result


def _sync_alone(url: str, dsn: str, **config: Any) -> dg.ExecuteInProcessResult:
    """Only the sync asset, as a run after the metrics changed."""
    return dg.materialize(
        [klaviyo_profile_sync],
        resources={
            "postgres": PostgresResource(dsn=dsn),
            "klaviyo": KlaviyoResource(api_url=url, sync_enabled="1"),
        },
        run_config={"ops": {"klaviyo_profile_sync": {"config": config}}} if config else None,
    )


def _new_vips(engine: sa.Engine, n: int) -> list[str]:
    """n identifiable customers who were not VIP become VIP (a metrics change, as staff or the
    next scoring would make it); returns their ids."""
    with engine.begin() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                sa.text(
                    """
                    SELECT c.id::text FROM customers c JOIN klaviyo_profile_state st
                      ON st.customer_id = c.id
                    WHERE NOT EXISTS (SELECT 1 FROM customer_segments s
                                      WHERE s.customer_id = c.id AND s.segment_name = 'vip')
                      AND c.deleted_at IS NULL AND c.email IS NOT NULL
                    ORDER BY md5(c.id::text) LIMIT :n
                    """
                ),
                {"n": n},
            )
        ]
        conn.execute(
            sa.text(
                "INSERT INTO customer_segments (customer_id, segment_name, segment_type, "
                "confidence, assigned_by, assigned_at) SELECT unnest(CAST(:ids AS uuid[])), "
                "'vip', 'value', 1.0, 'manual', now()"
            ),
            {"ids": ids},
        )
    return ids


def _run_log(engine: sa.Engine, run_id: str, operation: str) -> list[str]:
    with engine.connect() as conn:
        return sorted(
            r[0]
            for r in conn.execute(
                sa.text(
                    "SELECT customer_id::text FROM customer_sync_logs WHERE run_id = :run "
                    "AND target = 'klaviyo' AND operation = :op AND klaviyo_status = 'success'"
                ),
                {"run": run_id, "op": operation},
            )
        )


def test_full_refresh_puts_crm_properties_and_exact_list_members_on_klaviyo(
    synced, engine: sa.Engine
) -> None:
    sandbox, proxy, result = synced
    api = helpers.client(sandbox.url)
    with engine.connect() as conn:
        customers = conn.execute(
            sa.text(
                """
                SELECT c.id::text, c.email_lowercase, st.klaviyo_profile_id,
                       coalesce((SELECT array_agg(segment_name ORDER BY segment_name)
                                 FROM customer_segments s WHERE s.customer_id = c.id), '{}')
                FROM customers c LEFT JOIN klaviyo_profile_state st ON st.customer_id = c.id
                WHERE c.deleted_at IS NULL AND c.merged_into IS NULL AND c.redacted_at IS NULL
                  AND (c.email IS NOT NULL OR c.phone_normalized IS NOT NULL)
                  AND st.failed_hash IS NULL
                """
            )
        ).all()
        members = {s: helpers.segment_members(conn, s) for s in DEFAULT_SEGMENTS}
    assert len(customers) > 250
    for customer_id, email, profile_id, segments in customers:
        assert profile_id, f"customer {customer_id} has no Klaviyo profile"
        attrs = helpers.profile(api, profile_id)
        assert attrs["properties"]["crm_customer_id"] == customer_id
        assert attrs["properties"]["crm_segments"] == list(segments)
        assert attrs["properties"]["crm_vip"] == ("vip" in segments)
        if email:
            assert attrs["email"].lower() == email
    lists = helpers.list_ids(api)
    for segment in DEFAULT_SEGMENTS:
        assert helpers.list_members(api, lists[list_name(segment)]) == members[segment], segment
    assert sum(len(m) for m in members.values()) > 0
    meta = materialization(result, "klaviyo_profile_sync")
    assert meta["profiles_pushed"] == meta["planned_profiles_to_push"] >= len(customers)
    # the first sync records who is already in a segment instead of firing for everyone
    assert meta["events_sent"] == 0 and meta["baseline_triggers"] > len(customers)
    assert helpers.nonconforming(proxy.exchanges) == {}
    assert len(helpers.writes(proxy.exchanges)) > 0


def test_a_second_run_writes_nothing(synced, engine: sa.Engine, database_url: str) -> None:
    sandbox, proxy, _ = synced
    before = len(proxy.exchanges)
    result = _sync_alone(proxy.url, database_url)
    assert result.success
    assert helpers.writes(proxy.exchanges[before:]) == []
    meta = materialization(result, "klaviyo_profile_sync")
    assert meta["planned_profiles_to_push"] == 0 and meta["events_sent"] == 0


def test_the_plan_command_shows_nothing_to_write_after_a_sync(synced) -> None:
    result = CliRunner().invoke(cli_app, ["activation", "plan"])
    assert result.exit_code == 0, result.output
    assert "profiles to push (payload changed): 0" in result.output
    for segment in DEFAULT_SEGMENTS:
        assert f"CRM: {segment}: +0 -0 members" in result.output
    assert "trigger events to send: 0" in result.output


def test_a_change_writes_exactly_the_changed_profiles_members_and_entry_events(
    synced, engine: sa.Engine, database_url: str
) -> None:
    sandbox, proxy, _ = synced
    api = helpers.client(sandbox.url)
    changed = _new_vips(engine, 3)  # 1% of 300
    before = len(proxy.exchanges)
    entered_before = helpers.events_of(api, METRIC_ENTERED_SEGMENT)
    result = _sync_alone(proxy.url, database_url)
    assert result.success
    run_id = result.run_id
    assert _run_log(engine, run_id, "klaviyo_profile") == sorted(changed)
    assert _run_log(engine, run_id, "klaviyo_list_add") == sorted(changed)
    assert _run_log(engine, run_id, "klaviyo_event") == sorted(changed)
    with engine.connect() as conn:
        vips = helpers.segment_members(conn, "vip")
        profile_ids = dict(
            conn.execute(
                sa.text(
                    "SELECT customer_id::text, klaviyo_profile_id FROM klaviyo_profile_state "
                    "WHERE customer_id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": changed},
            ).all()
        )
    lists = helpers.list_ids(api)
    assert helpers.list_members(api, lists[list_name("vip")]) == vips
    entered = helpers.events_of(api, METRIC_ENTERED_SEGMENT)
    fresh = [e for e in entered if e["id"] not in {x["id"] for x in entered_before}]
    assert sorted(e["relationships"]["profile"]["data"]["id"] for e in fresh) == sorted(
        profile_ids[c] for c in changed
    )
    assert {e["attributes"]["event_properties"]["segment"] for e in fresh} == {"vip"}
    assert helpers.events_of(api, METRIC_NEW_CUSTOMER) == []
    new_writes = helpers.writes(proxy.exchanges[before:])
    # one bulk job, one list add, one event per entry
    assert sorted(ex.path.split("/")[2] for ex in new_writes) == sorted(
        ["profile-bulk-import-jobs", "lists"] + ["events"] * len(changed)
    )
    assert helpers.nonconforming(proxy.exchanges[before:]) == {}


class _DropsAfterSending(KlaviyoWriter):
    """Klaviyo accepts the second event, then the connection drops before the run records it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent = 0

    def create_event(self, event: dict[str, Any]) -> None:
        super().create_event(event)
        self.sent += 1
        if self.sent == 2:
            raise ConnectionError("connection reset after the event was accepted")


def test_entry_events_fire_once_when_a_failed_run_is_retried(
    synced, engine: sa.Engine, database_url: str
) -> None:
    sandbox, proxy, _ = synced
    api = helpers.client(sandbox.url)
    changed = _new_vips(engine, 4)
    before = {e["id"] for e in helpers.events_of(api, METRIC_ENTERED_SEGMENT)}
    with pytest.raises(ConnectionError):
        sync_klaviyo(engine, _DropsAfterSending(helpers.client(proxy.url)), "failing-run")
    plan, result = sync_klaviyo(engine, KlaviyoWriter(helpers.client(proxy.url)), "retry-run")
    assert result is not None and plan.profiles == []  # profiles went in the failed run
    # the retry re-sends the unrecorded event and the rest; Klaviyo keeps one per unique_id
    assert result.events_sent == len(changed) - 1
    fresh = [e for e in helpers.events_of(api, METRIC_ENTERED_SEGMENT) if e["id"] not in before]
    unique_ids = [e["attributes"]["event_properties"]["$event_id"] for e in fresh]
    assert len(fresh) == len(changed) == len(set(unique_ids))
    with engine.connect() as conn:
        states = conn.execute(
            sa.text(
                "SELECT status, count(*) FROM klaviyo_trigger_events "
                "WHERE customer_id = ANY(CAST(:ids AS uuid[])) AND segment_name = 'vip' "
                "GROUP BY status"
            ),
            {"ids": changed},
        ).all()
    assert dict(states) == {"sent": len(changed)}


def test_without_sync_enabled_the_asset_only_plans(
    synced, engine: sa.Engine, database_url: str
) -> None:
    sandbox, proxy, _ = synced
    changed = _new_vips(engine, 2)
    before = len(proxy.exchanges)
    result = dg.materialize(
        [klaviyo_profile_sync],
        resources={
            "postgres": PostgresResource(dsn=database_url),
            "klaviyo": KlaviyoResource(api_url=proxy.url),
        },
    )
    assert result.success
    assert proxy.exchanges[before:] == []
    meta = materialization(result, "klaviyo_profile_sync")
    assert meta["sync_enabled"] is False
    assert meta["planned_profiles_to_push"] == len(changed)
    assert meta["planned_list_members_to_add"] == len(changed)
    assert meta["planned_events_to_send"] == len(changed)
    # and the next enabled run sends exactly that plan
    sent = materialization(_sync_alone(proxy.url, database_url), "klaviyo_profile_sync")
    assert (sent["profiles_pushed"], sent["members_added"], sent["events_sent"]) == (
        len(changed),
        len(changed),
        len(changed),
    )


def _rewrite_profiles(store: Path, change: dict[str, Any]) -> None:
    """Apply `change[profile_id](attributes)` to those profiles of the store's Klaviyo side."""
    path = store / "klaviyo" / "profiles.jsonl"
    lines = []
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line)
        if record["id"] in change:
            change[record["id"]](record["attributes"])
        lines.append(orjson.dumps(record))
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_an_unsubscribe_in_klaviyo_reaches_customers_firestore_and_lists(
    synced, store: Path, engine: sa.Engine
) -> None:
    """Run last: it rewrites the module's store (the profiles' subscriptions, an event)."""
    sandbox, proxy, _ = synced
    with engine.connect() as conn:
        picked = conn.execute(
            sa.text(
                """
                SELECT c.id::text, s.external_id FROM customers c
                JOIN customer_sources s ON s.customer_id = c.id AND s.source = 'klaviyo'
                WHERE c.accepts_email_marketing AND c.deleted_at IS NULL
                  AND c.email IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM customer_segments g
                                  WHERE g.customer_id = c.id AND g.segment_name = 'vip')
                ORDER BY md5(c.id::text) LIMIT 3
                """
            )
        ).all()
    assert len(picked) == 3
    (unsubscribed, _), (suppressed, _), (by_event, _) = picked
    now = datetime.now(UTC).replace(microsecond=0).isoformat()

    def unsubscribe(attrs: dict[str, Any]) -> None:
        marketing = attrs["subscriptions"]["email"]["marketing"]
        marketing.update(consent="UNSUBSCRIBED", consent_timestamp=now)
        marketing["can_receive_email_marketing"] = False
        attrs["updated"] = now

    def suppress(attrs: dict[str, Any]) -> None:
        marketing = attrs["subscriptions"]["email"]["marketing"]
        marketing["suppression"] = [{"reason": "HARD_BOUNCE", "timestamp": now}]
        marketing["can_receive_email_marketing"] = False
        attrs["updated"] = now

    _rewrite_profiles(store, {picked[0][1]: unsubscribe, picked[1][1]: suppress})
    with (store / "klaviyo" / "metrics.jsonl").open("ab") as fh:
        fh.write(orjson.dumps({"type": "metric", "id": "UnSb01",
                               "attributes": {"name": "Unsubscribed"}}) + b"\n")  # fmt: skip
    with (store / "klaviyo" / "events.jsonl").open("ab") as fh:
        event = {
            "type": "event",
            "id": "unsub-1",
            "attributes": {"datetime": now, "event_properties": {}},
            "relationships": {
                "profile": {"data": {"type": "profile", "id": picked[2][1]}},
                "metric": {"data": {"type": "metric", "id": "UnSb01"}},
            },
        }
        fh.write(orjson.dumps(event) + b"\n")
    sandbox.reload()
    _new_vips_of(engine, [suppressed])  # a suppressed profile must not join a CRM list

    result = build_definitions().resolve_job_def("incremental_sync").execute_in_process()
    assert result.success
    with engine.connect() as conn:
        rows = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                sa.text(
                    "SELECT id::text, accepts_email_marketing, email_consent_source "
                    "FROM customers WHERE id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": [unsubscribed, suppressed, by_event]},
            )
        }
    assert rows[unsubscribed][0] is False
    assert rows[suppressed] == (False, "klaviyo_suppression")
    assert rows[by_event] == (False, "klaviyo_unsubscribed_event")
    docs = firestore.Client(project=TEST_PROJECT).collection("customers")
    for customer_id in (unsubscribed, suppressed, by_event):
        doc = docs.document(customer_id).get().to_dict()
        assert doc["marketing"]["accepts_email"] is False, customer_id
    api = helpers.client(sandbox.url)
    with engine.connect() as conn:
        (profile_id,) = conn.execute(
            sa.text("SELECT klaviyo_profile_id FROM klaviyo_profile_state WHERE customer_id = :c"),
            {"c": suppressed},
        ).one()
        vips = helpers.segment_members(conn, "vip")
    members = helpers.list_members(api, helpers.list_ids(api)[list_name("vip")])
    assert profile_id not in members and members == vips


def _new_vips_of(engine: sa.Engine, ids: list[str]) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customer_segments (customer_id, segment_name, segment_type, "
                "confidence, assigned_by, assigned_at) SELECT unnest(CAST(:ids AS uuid[])), "
                "'vip', 'value', 1.0, 'manual', now()"
            ),
            {"ids": ids},
        )
