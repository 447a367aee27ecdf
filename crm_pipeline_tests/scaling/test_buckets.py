"""Issue 16 item 5: `recompute_bucketed` as three customer-hash buckets.

- The buckets recompute exactly what one unbucketed full recompute does: the same
  customer_metrics rows, segment assignments and Firestore documents.
- The Klaviyo profile sync as buckets pushes what one unbucketed sync pushes (and nothing when
  nothing changed, and nothing at all while the sync is off).
- A bucketed run moves the change log's horizons to where the log stood before its first bucket:
  the next incremental run skips what it recomputed, not what changed during it.

One `full_refresh` of a 200-customer store serves every test of the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import orjson
import pytest
import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.activation.client import KlaviyoWriter
from crm_pipeline.activation.payloads import profile_rows
from crm_pipeline.activation.sync import sync_klaviyo
from crm_pipeline.changes.buckets import Bucket, all_buckets, bucket_customers, change_log_position
from crm_pipeline.changes.log import METRICS, read_window
from crm_pipeline.changes.refresh import (
    refresh_metrics,
    refresh_mirror,
    refresh_segment_assignments,
)
from crm_pipeline.definitions import build_definitions
from crm_pipeline.defs.firestore_mirror.checks import MODE_TAG
from crm_pipeline.defs.pipeline.bucketed import (
    AS_OF_TAG,
    POSITION_TAG,
    SYNC_OFF,
    bucketed_job,
    recorded_position,
)
from crm_pipeline.defs.resources import resources
from crm_pipeline.firestore.mirror import sync_mirror
from crm_pipeline.sandbox.generate import generate_store
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline_tests.activation import helpers
from crm_pipeline_tests.contracts.recording_proxy import Exchange, RecordingProxy
from crm_pipeline_tests.fixtures.firestore import TEST_PROJECT
from crm_pipeline_tests.fixtures.postgres import truncate_all

AS_OF = datetime(2026, 11, 30, 12, tzinfo=UTC)
# the Klaviyo and horizon tests: one recent moment, so the unbucketed and bucketed payloads agree
# (segments expire relative to it, and Klaviyo is sent only unexpired ones)
NOW = datetime.now(UTC).replace(microsecond=0)
VOLATILE = {"mirrored_at"}  # when the document was written, not what it says
BUCKETS = 3
KLAVIYO_STATE = ("klaviyo_profile_state", "klaviyo_list_members", "klaviyo_lists")


@pytest.fixture(scope="module")
def refreshed(
    tmp_path_factory: pytest.TempPathFactory,
    engine: sa.Engine,
    database_url: str,
    firestore_emulator: str,
) -> Iterator[tuple[RecordingProxy, pytest.MonkeyPatch]]:
    """One `full_refresh` (Klaviyo sync off) of a 200-customer store, Klaviyo traffic recorded.
    Its mirror check is the run-sized one: the comparison below is this module's full check."""
    store = tmp_path_factory.mktemp("buckets") / "store"
    generate_store(store, customers=200, seed=16)
    truncate_all(engine)
    with (
        SandboxServer(store, klaviyo_rate_limits=False, shopify_plan="plus") as sandbox,
        RecordingProxy(sandbox.url) as proxy,
        pytest.MonkeyPatch.context() as env,
    ):
        env.setenv("SHOPIFY_API_URL", sandbox.url)
        env.setenv("KLAVIYO_API_URL", proxy.url)
        env.delenv("KLAVIYO_SYNC_ENABLED", raising=False)
        full = build_definitions().resolve_job_def("full_refresh")
        assert full.execute_in_process(tags={MODE_TAG: "run"}).success
        yield proxy, env


def metrics_rows(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM customer_metrics")).mappings().all()
    return {str(r["customer_id"]): {k: v for k, v in r.items() if k != "computed_at"} for r in rows}


def segment_rows(engine: sa.Engine) -> set[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT customer_id::text, segment_name, assigned_by, confidence, expires_at "
                "FROM customer_segments"
            )
        )
        return set(rows.tuples().all())


def documents(client: firestore.Client) -> dict[str, dict[str, Any]]:
    """Every customer document with its subcollections' documents."""
    out: dict[str, dict[str, Any]] = {}
    for snap in client.collection("customers").stream():
        data = {k: v for k, v in (snap.to_dict() or {}).items() if k not in VOLATILE}
        for sub in snap.reference.collections():
            data[f"/{sub.id}"] = {s.id: s.to_dict() for s in sub.stream()}
        out[snap.id] = data
    return out


def forget_results(engine: sa.Engine, client: firestore.Client) -> None:
    """Drop computed metrics, segments and the mirror (documents, state) to recompute them."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM customer_metrics"))
        # computed segments go too: each run assigns them afresh (and with its own expiry)
        conn.execute(sa.text("DELETE FROM customer_segments WHERE assigned_by <> 'manual'"))
        conn.execute(sa.text("DELETE FROM firestore_mirror_subdocuments"))
        conn.execute(sa.text("DELETE FROM firestore_mirror_state"))
    client.recursive_delete(client.collection("customers"))


@pytest.mark.usefixtures("refreshed")
def test_bucketed_recompute_equals_the_unbucketed_one(
    engine: sa.Engine, firestore_client: firestore.Client
) -> None:
    with engine.connect() as conn:  # the buckets split the customers, each into one bucket
        everyone = list(conn.execute(sa.text("SELECT id::text FROM customers")).scalars())
        pieces = [bucket_customers(conn, b) for b in all_buckets(3)]
    assert sorted(i for piece in pieces for i in piece) == sorted(everyone)
    assert all(pieces), "200 customers leave no bucket of 3 empty"
    with pytest.raises(ValueError):
        Bucket(3, 3)
    with engine.begin() as conn:  # a few dead customers: their documents go, in both runs
        conn.execute(
            sa.text(
                "UPDATE customers SET deleted_at = now() WHERE id IN "
                "(SELECT id FROM customers ORDER BY id LIMIT 5)"
            )
        )
    forget_results(engine, firestore_client)
    refresh_metrics(engine, AS_OF, full=True)
    refresh_segment_assignments(engine, AS_OF, full=True)
    sync_mirror(engine, firestore_client)
    expected = (metrics_rows(engine), segment_rows(engine), documents(firestore_client))
    assert expected[0] and expected[2]

    forget_results(engine, firestore_client)
    result = bucketed_job(3).execute_in_process(
        resources=resources(), tags={AS_OF_TAG: AS_OF.isoformat()}
    )
    assert result.success
    assert {e.step_key for e in result.get_step_success_events()} >= {
        f"{stage}_bucket_{i}" for stage in ("metrics", "segments", "mirror") for i in range(3)
    }
    actual = (metrics_rows(engine), segment_rows(engine), documents(firestore_client))
    assert actual[0] == expected[0]
    assert actual[1] == expected[1]
    assert actual[2] == expected[2]


def run_bucketed(instance: dg.DagsterInstance, **tags: str) -> dg.ExecuteInProcessResult:
    result = bucketed_job(BUCKETS).execute_in_process(
        resources=resources(), instance=instance, tags={AS_OF_TAG: NOW.isoformat(), **tags}
    )
    assert result.success
    return result


def pushed_profiles(exchanges: list[Exchange]) -> dict[str, dict[str, Any]]:
    """Profile resources sent in bulk import jobs, by email (else phone), last one wins."""
    out: dict[str, dict[str, Any]] = {}
    for ex in exchanges:
        if ex.method == "POST" and ex.path.startswith("/api/profile-bulk-import-jobs"):
            for resource in orjson.loads(ex.request_body)["data"]["attributes"]["profiles"]["data"]:
                attrs = resource["attributes"]
                out[attrs.get("email") or attrs.get("phone_number") or resource["id"]] = resource
    return out


def import_jobs(exchanges: list[Exchange]) -> int:
    return sum(
        1 for ex in exchanges if ex.method == "POST" and ex.path == "/api/profile-bulk-import-jobs"
    )


def klaviyo_state(engine: sa.Engine) -> dict[str, set[tuple[Any, ...]]]:
    queries = {
        "profiles": "SELECT customer_id::text, klaviyo_profile_id, payload_hash, failed_hash "
        "FROM klaviyo_profile_state",
        "members": "SELECT segment_name, klaviyo_profile_id, customer_id::text "
        "FROM klaviyo_list_members",
        "triggers": "SELECT unique_id, status FROM klaviyo_trigger_events",
    }
    with engine.connect() as conn:
        return {k: set(conn.execute(sa.text(q)).tuples().all()) for k, q in queries.items()}


def logged(instance: dg.DagsterInstance, run_id: str, text: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if text in (e.user_message or "")]


def test_bucketed_klaviyo_sync_pushes_what_one_sync_pushes(
    refreshed: tuple[RecordingProxy, pytest.MonkeyPatch], engine: sa.Engine
) -> None:
    proxy, env = refreshed
    with engine.connect() as conn:  # the buckets split the identifiable customers
        everyone = [r.customer_id for r in profile_rows(conn)]
        pieces = [[r.customer_id for r in profile_rows(conn, bucket=b)] for b in all_buckets(3)]
    assert sorted(sum(pieces, [])) == sorted(everyone) and all(pieces)

    instance = dg.DagsterInstance.ephemeral()
    # sync off: the Klaviyo steps write nothing and say so (and the metrics are as of NOW)
    start = len(proxy.exchanges)
    off = run_bucketed(instance)
    assert helpers.writes(proxy.exchanges[start:]) == []
    assert klaviyo_state(engine)["profiles"] == set()
    assert len(logged(instance, off.run_id, SYNC_OFF)) == BUCKETS + 1

    env.setenv("KLAVIYO_SYNC_ENABLED", "1")
    start = len(proxy.exchanges)
    sync_klaviyo(engine, KlaviyoWriter(helpers.client(proxy.url)), "unbucketed")
    unbucketed = proxy.exchanges[start:]
    expected = pushed_profiles(unbucketed), klaviyo_state(engine)
    assert len(expected[0]) == len(everyone) and expected[1]["members"]

    with engine.begin() as conn:  # Klaviyo keeps the profiles; the CRM forgets it pushed them
        for table in (*KLAVIYO_STATE, "klaviyo_trigger_events"):
            conn.execute(sa.text(f"DELETE FROM {table}"))  # noqa: S608 -- constant names
    start = len(proxy.exchanges)
    run_bucketed(instance)
    bucketed = proxy.exchanges[start:]
    assert pushed_profiles(bucketed) == expected[0]
    assert klaviyo_state(engine) == expected[1]
    # each bucket pushed its own profiles; the step after the buckets found them unchanged
    assert import_jobs(bucketed) == BUCKETS and import_jobs(unbucketed) == 1
    assert helpers.nonconforming(bucketed) == {}

    start = len(proxy.exchanges)
    run_bucketed(instance)  # nothing changed: nothing is written
    assert helpers.writes(proxy.exchanges[start:]) == []
    env.delenv("KLAVIYO_SYNC_ENABLED")


def _touch(engine: sa.Engine, note: str) -> str:
    """A live customer's notes change (a change the log records); returns its id."""
    with engine.begin() as conn:
        return str(
            conn.execute(
                sa.text(
                    "UPDATE customers SET notes = :note WHERE id = (SELECT id FROM customers "
                    "WHERE deleted_at IS NULL AND merged_into IS NULL ORDER BY md5(id::text) "
                    "OFFSET :n LIMIT 1) RETURNING id::text"
                ),
                {"note": note, "n": len(note)},
            ).scalar_one()
        )


def test_a_bucketed_run_advances_the_horizons_to_where_it_started(
    refreshed: tuple[RecordingProxy, pytest.MonkeyPatch], engine: sa.Engine
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    before = _touch(engine, "changed before")
    with engine.connect() as conn:
        assert before in read_window(conn, METRICS).customer_ids
    result = run_bucketed(instance)
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and int(run.tags[POSITION_TAG]) > 0
    # the next incremental run has nothing to do for what the buckets recomputed
    assert refresh_metrics(engine).window.customer_ids == []
    assert refresh_segment_assignments(engine).window.customer_ids == []
    client = firestore.Client(project=TEST_PROJECT)
    assert refresh_mirror(engine, client).window.customer_ids == []

    # a change after the position was read (while the buckets run) waits for the next run
    position = change_log_position(engine)
    during = _touch(engine, "changed during the buckets")
    result = run_bucketed(instance, **{POSITION_TAG: str(position)})
    assert logged(instance, result.run_id, f"position {position} already recorded")
    assert refresh_metrics(engine).window.customer_ids == [during]
    assert refresh_segment_assignments(engine).window.customer_ids == [during]
    assert refresh_mirror(engine, client).window.customer_ids == [during]


def test_the_horizons_move_only_after_every_mirror_and_by_the_first_runs_position() -> None:
    job = bucketed_job(BUCKETS)
    upstream = job.graph.dependency_structure.input_to_upstream_outputs_for_node
    waits_for = {o.node_name for outs in upstream("advance_change_log").values() for o in outs}
    assert waits_for == {f"mirror_bucket_{i}" for i in range(BUCKETS)}
    starts_after = {o.node_name for outs in upstream("metrics_bucket_0").values() for o in outs}
    assert starts_after == {"record_change_log_position"}
    # a re-execution from failure skips the recording step: the parent run's position holds
    instance = dg.DagsterInstance.ephemeral()
    first = instance.create_run_for_job(job, tags={POSITION_TAG: "4242"})
    again = instance.create_run_for_job(job, parent_run_id=first.run_id, root_run_id=first.run_id)
    assert recorded_position(instance, again.run_id) == 4242
    assert recorded_position(instance, instance.create_run_for_job(job).run_id) is None
