"""Carry an activation plan out against Klaviyo: profiles, then list members, then triggers.

Profiles go first so that customers Klaviyo did not know yet have profile ids for their list
memberships and events. Every step commits what Klaviyo accepted as it goes (state.py), so a
sync that fails half-way is resumed by running it again: bulk imports are upserts, members are
synced by difference against what was recorded, and a trigger event is re-sent with the
`unique_id` it was recorded with, which Klaviyo records once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from crm_pipeline.activation import settings, state
from crm_pipeline.activation.client import KlaviyoWriter
from crm_pipeline.activation.payloads import ProfileRow, profile_rows
from crm_pipeline.activation.plan import ActivationPlan, build_plan
from crm_pipeline.changes.buckets import Bucket
from crm_pipeline.sources.errors import BadRequest

log = logging.getLogger(__name__)


@dataclass
class SyncResult:
    """What one sync wrote."""

    profiles_pushed: int = 0
    profiles_failed: int = 0
    jobs: int = 0
    lists_created: int = 0
    members_added: int = 0
    members_removed: int = 0
    events_sent: int = 0
    events_failed: int = 0
    baseline_triggers: int = 0
    errors: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, int)}


def job_chunks(rows: list[ProfileRow]) -> Iterator[list[ProfileRow]]:
    """Rows split into bulk import jobs within Klaviyo's profile count and payload limits."""
    chunk: list[ProfileRow] = []
    size = 0
    for row in rows:
        item = len(row.resource_json) + 1  # jsonb text: a little larger than what is sent
        if chunk and (
            len(chunk) >= settings.MAX_JOB_PROFILES or size + item > settings.MAX_JOB_BYTES
        ):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += item
    if chunk:
        yield chunk


def _profile_key(resource: dict[str, Any]) -> str:
    attrs = resource.get("attributes") or {}
    if attrs.get("email"):
        return "email:" + str(attrs["email"]).lower()
    if attrs.get("phone_number"):
        return "phone:" + str(attrs["phone_number"])
    return "id:" + str(resource.get("id"))


class ActivationSync:
    """Applies plans to one Klaviyo account, recording into one database."""

    def __init__(
        self,
        engine: sa.Engine,
        writer: KlaviyoWriter,
        run_id: str,
        *,
        before_event: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.run_id = run_id
        # a test hook: called with each unique_id before its event is sent
        self.before_event = before_event

    def apply(self, plan: ActivationPlan) -> SyncResult:
        result = SyncResult()
        with self.engine.begin() as conn:
            status = "baseline" if plan.baseline else "pending"
            state.record_triggers(conn, plan.new_triggers, status)
            if plan.baseline:
                result.baseline_triggers = len(plan.new_triggers)
        self.push_profiles(plan, result)
        self.sync_lists(plan, result)
        self.send_events(result)
        with self.engine.begin() as conn:
            state.log_rows(
                conn, self.run_id, [(None, "klaviyo_sync", "success", None, result.counts())]
            )
        return result

    # ------------------------------------------------------------------ profiles
    def push_profiles(self, plan: ActivationPlan, result: SyncResult) -> None:
        for chunk in job_chunks(plan.profiles):
            by_key = {row.match_key: row for row in chunk}
            job_id = self.writer.start_import([row.resource for row in chunk])
            self.writer.wait_for_job(job_id)
            result.jobs += 1
            failed: dict[str, str] = {}
            for error in self.writer.job_errors(job_id):
                attrs = error.get("attributes") or {}
                original = attrs.get("original_payload") or {}
                row = by_key.get(_profile_key(original)) if original else None
                if row is not None:
                    failed[row.customer_id] = str(attrs.get("detail") or attrs.get("title"))
                else:
                    result.errors.append(f"job {job_id}: {attrs.get('detail')}")
            ids: dict[str, str] = {}
            # profile ids are learnt only for customers Klaviyo did not know: a changed profile
            # of a known customer costs no lookup (the job's profiles come 100 per request)
            unknown = any(row.klaviyo_profile_id is None for row in chunk)
            for profile in self.writer.job_profiles(job_id) if unknown else ():
                attrs = profile.get("attributes") or {}
                for key in (
                    "email:" + str(attrs.get("email") or "").lower(),
                    "phone:" + str(attrs.get("phone_number") or ""),
                    "id:" + str(profile.get("id")),
                ):
                    ids.setdefault(key, str(profile["id"]))
            pushed: list[tuple[str, str | None, str]] = []
            refused: list[tuple[str, str, str]] = []
            logs: list[tuple[str | None, str, str, str | None, dict[str, Any] | None]] = []
            for row in chunk:
                if row.customer_id in failed:
                    problem = failed[row.customer_id]
                    refused.append((row.customer_id, row.payload_hash, problem))
                    logs.append((row.customer_id, "klaviyo_profile", "failed", problem, None))
                    continue
                pid = ids.get(row.match_key) or row.klaviyo_profile_id
                pushed.append((row.customer_id, pid, row.payload_hash))
                logs.append((row.customer_id, "klaviyo_profile", "success", None, None))
                if pid:  # the list step sees profiles created just now
                    plan.rows[row.customer_id] = _with_profile(row, pid)
                    for m in plan.memberships.values():
                        if row.customer_id in m.desired:
                            m.desired[row.customer_id] = pid
            with self.engine.begin() as conn:
                state.mark_pushed(conn, pushed)
                state.mark_failed(conn, refused)
                state.log_rows(conn, self.run_id, logs)
            result.profiles_pushed += len(pushed)
            result.profiles_failed += len(refused)
            log.info(
                "bulk import job %s: %d profiles, %d refused", job_id, len(pushed), len(refused)
            )

    # ------------------------------------------------------------------ lists
    def _list_id(self, segment: str) -> tuple[str, bool]:
        """The CRM list of a segment: the recorded one, one of that name a run created before
        it could record it (resume), or a new one."""
        name = settings.list_name(segment)
        found = self.writer.find_list(name)
        created = found is None
        list_id = found or self.writer.create_list(name)
        with self.engine.begin() as conn:
            state.record_list(conn, segment, list_id, name)
        return list_id, created

    def sync_lists(self, plan: ActivationPlan, result: SyncResult) -> None:
        for segment, membership in plan.memberships.items():
            if membership.list_id is None:
                membership.list_id, created = self._list_id(segment)
                result.lists_created += int(created)
            list_id = membership.list_id
            adds = membership.to_add()
            for start in range(0, len(adds), settings.MAX_LIST_PROFILES):
                chunk = adds[start : start + settings.MAX_LIST_PROFILES]
                self.writer.add_members(list_id, [pid for pid, _ in chunk])
                with self.engine.begin() as conn:
                    state.members_added(conn, segment, chunk)
                    snapshot = {"list": settings.list_name(segment)}
                    state.log_rows(
                        conn,
                        self.run_id,
                        [(cid, "klaviyo_list_add", "success", None, snapshot) for _, cid in chunk],
                    )
                result.members_added += len(chunk)
            removes = membership.to_remove()
            for start in range(0, len(removes), settings.MAX_LIST_PROFILES):
                gone = removes[start : start + settings.MAX_LIST_PROFILES]
                self.writer.remove_members(list_id, gone)
                with self.engine.begin() as conn:
                    state.members_removed(conn, segment, gone)
                    snapshot = {"list": settings.list_name(segment)}
                    state.log_rows(
                        conn,
                        self.run_id,
                        [
                            (
                                membership.recorded.get(pid),
                                "klaviyo_list_remove",
                                "success",
                                None,
                                snapshot,
                            )
                            for pid in gone
                        ],
                    )
                result.members_removed += len(gone)

    # ------------------------------------------------------------------ trigger events
    def send_events(self, result: SyncResult) -> None:
        with self.engine.connect() as conn:
            pending = conn.execute(state.PENDING_TRIGGERS).all()
        for trigger in pending:
            if self.before_event is not None:
                self.before_event(trigger.unique_id)
            error: str | None = None
            try:
                self.writer.create_event(trigger_event(trigger))
            except Exception as exc:  # recorded and retried by the next sync
                if not _per_event(exc):
                    raise
                error = str(exc)[:500]
            with self.engine.begin() as conn:
                state.trigger_done(conn, trigger.unique_id, error)
                state.log_rows(
                    conn,
                    self.run_id,
                    [
                        (
                            trigger.customer_id,
                            "klaviyo_event",
                            "failed" if error else "success",
                            error,
                            {"metric": trigger.metric_name, "unique_id": trigger.unique_id},
                        )
                    ],
                )
            if error:
                result.events_failed += 1
            else:
                result.events_sent += 1


def _per_event(exc: Exception) -> bool:
    """A refusal of this one event (a 4xx), as opposed to Klaviyo being unreachable."""
    return isinstance(exc, BadRequest)


def _with_profile(row: ProfileRow, pid: str) -> ProfileRow:
    return replace(row, klaviyo_profile_id=pid)


def sync_klaviyo(
    engine: sa.Engine,
    writer: KlaviyoWriter | None,
    run_id: str,
    segments: Sequence[str] = settings.DEFAULT_SEGMENTS,
    **options: Any,
) -> tuple[ActivationPlan, SyncResult | None]:
    """Plan, and apply the plan when a writer is given (None: the sync is off, plan only)."""
    with engine.connect() as conn:
        plan = build_plan(conn, list(segments))
    if writer is None:
        return plan, None
    return plan, ActivationSync(engine, writer, run_id, **options).apply(plan)


def push_bucket_profiles(
    engine: sa.Engine, writer: KlaviyoWriter, run_id: str, bucket: Bucket
) -> SyncResult:
    """Push the changed profiles of one customer-hash bucket (recompute_bucketed).

    Only profiles: list memberships and trigger events are built from everyone, so they stay
    with one `sync_klaviyo` after every bucket, which then finds these profiles unchanged."""
    with engine.connect() as conn:
        changed = [row for row in profile_rows(conn, bucket=bucket) if row.changed]
    plan = ActivationPlan(segments=[], profiles=changed, rows={r.customer_id: r for r in changed})
    result = SyncResult()
    ActivationSync(engine, writer, run_id).push_profiles(plan, result)
    return result


def trigger_event(trigger: Any) -> dict[str, Any]:
    """The event resource of a recorded trigger: metric, profile, properties, unique_id."""
    properties = dict(trigger.properties)
    for key in ("crm_segments", "crm_vip", "crm_rfm_segment", "crm_value_tier"):
        properties.pop(key, None)
    if trigger.segment_name:
        properties["segment"] = trigger.segment_name
        properties["list"] = settings.list_name(trigger.segment_name)
    profile: dict[str, Any] = {"type": "profile", "attributes": {}}
    if trigger.klaviyo_profile_id:
        profile["id"] = trigger.klaviyo_profile_id
    elif trigger.email:
        profile["attributes"]["email"] = trigger.email
    else:
        profile["attributes"]["phone_number"] = trigger.phone_normalized
    return {
        "type": "event",
        "attributes": {
            "properties": properties,
            "unique_id": trigger.unique_id,
            "metric": {"data": {"type": "metric", "attributes": {"name": trigger.metric_name}}},
            "profile": {"data": profile},
        },
    }
