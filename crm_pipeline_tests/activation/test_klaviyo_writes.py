"""The write side through the SDK against the sandbox: Klaviyo's size limits, import errors,
unique_id dedupe and 429s with Retry-After, every exchange validated against the OpenAPI
description; and the job split, a property-based check of Klaviyo's per-job limits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_pipeline.activation import settings
from crm_pipeline.activation.client import KlaviyoWriter
from crm_pipeline.activation.sync import job_chunks
from crm_pipeline.sandbox.generate import generate_store
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline.sources.errors import BadRequest
from crm_pipeline_tests.activation import helpers
from crm_pipeline_tests.contracts.recording_proxy import RecordingProxy


@dataclass(frozen=True)
class _Row:
    resource_json: str


@given(st.lists(st.integers(min_value=1, max_value=400), max_size=60))
def test_jobs_stay_within_the_profile_and_byte_limits(sizes: list[int]) -> None:
    rows = [_Row("x" * n) for n in sizes]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "MAX_JOB_PROFILES", 7)
        patch.setattr(settings, "MAX_JOB_BYTES", 1_000)
        chunks = list(job_chunks(rows))  # type: ignore[arg-type]
    assert [row for chunk in chunks for row in chunk] == rows
    for chunk in chunks:
        assert 1 <= len(chunk) <= 7
        # a single profile is never split; otherwise the job fits
        assert len(chunk) == 1 or sum(len(r.resource_json) + 1 for r in chunk) <= 1_000


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("writes") / "store"
    generate_store(path, customers=20, seed=3)
    return path


@pytest.fixture
def recorded(store: Path) -> Iterator[tuple[SandboxServer, RecordingProxy]]:
    # a third of the requests answered 429 with Retry-After: the client must wait them out
    with (
        SandboxServer(store, rate_limit_429=0.3, seed=11) as sandbox,
        RecordingProxy(sandbox.url) as proxy,
    ):
        yield sandbox, proxy


def test_writes_conform_and_429s_are_waited_out(recorded) -> None:
    sandbox, proxy = recorded
    writer = KlaviyoWriter(helpers.client(proxy.url), poll_interval=0.01)
    job = writer.start_import(
        [
            {"type": "profile", "attributes": {"email": "a@example.com", "properties": {"x": 1}}},
            {"type": "profile", "attributes": {"email": "not-an-email", "properties": {}}},
            {"type": "profile", "attributes": {"phone_number": "+15005550006"}},
        ]
    )
    attrs = writer.wait_for_job(job)
    assert (attrs["completed_count"], attrs["failed_count"]) == (2, 1)
    (error,) = list(writer.job_errors(job))
    assert error["attributes"]["original_payload"]["attributes"]["email"] == "not-an-email"
    profiles = {p["attributes"].get("email"): p["id"] for p in writer.job_profiles(job)}
    assert helpers.profile(writer.client, profiles["a@example.com"])["properties"] == {"x": 1}

    list_id = writer.create_list(settings.list_name("vip"))
    assert writer.find_list(settings.list_name("vip")) == list_id
    assert writer.find_list(settings.list_name("rfm:lost")) is None
    members = sorted(profiles.values())
    writer.add_members(list_id, members)
    writer.remove_members(list_id, members[:1])
    assert writer.list_member_ids(list_id) == set(members[1:])

    event = {
        "type": "event",
        "attributes": {
            "properties": {"segment": "vip"},
            "unique_id": "crm-entered:vip:c1:1",
            "metric": {"data": {"type": "metric", "attributes": {"name": "CRM Entered Segment"}}},
            "profile": {"data": {"type": "profile", "id": members[0], "attributes": {}}},
        },
    }
    writer.create_event(event)
    writer.create_event(event)  # a retry: Klaviyo records the unique_id once
    assert len(helpers.events_of(writer.client, "CRM Entered Segment")) == 1

    assert sandbox.state is not None and sandbox.state.counters.get("injected_429", 0) > 0
    assert helpers.nonconforming(proxy.exchanges) == {}


def test_klaviyo_limits_are_refused(recorded) -> None:
    sandbox, proxy = recorded
    writer = KlaviyoWriter(helpers.client(proxy.url))
    list_id = writer.create_list(settings.list_name("churn_risk:high"))
    with pytest.raises(BadRequest):
        writer.add_members(list_id, [f"P{n}" for n in range(settings.MAX_LIST_PROFILES + 1)])
    too_many = [
        {"type": "profile", "attributes": {"email": f"p{n}@example.com"}}
        for n in range(settings.MAX_JOB_PROFILES + 1)
    ]
    with pytest.raises(BadRequest):
        writer.start_import(too_many)
    assert helpers.nonconforming(proxy.exchanges) == {}
