"""Klaviyo's write endpoints the reverse sync uses, through the `klaviyo-api` SDK.

Every call goes through `KlaviyoClient._call`, so it shares the key, the `revision` header, the
timeouts and the one retry policy (429s and 5xx retried, `Retry-After` honoured) of the pulls,
and is counted against its rate-limit bucket (sources/rate_limits.py). Request bodies are built
as JSON:API dicts and turned into the SDK's query models with `model_validate`, which sends only
the fields we set: `from_dict` would send every other profile field as null, and Klaviyo takes
a null as "clear it" (names and locations would be wiped).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from openapi_client.models import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    EventCreateQueryV2,
    ListCreateQuery,
    ListMembersAddQuery,
    ListMembersDeleteQuery,
    ProfileImportJobCreateQuery,
)

from crm_pipeline.sources.errors import FatalSourceError
from crm_pipeline.sources.klaviyo import KlaviyoClient

# a job that is still running after this long fails the run (it can be resumed)
JOB_TIMEOUT_SECONDS = 900.0


class BulkImportFailed(FatalSourceError):
    """A profile bulk import job ended cancelled or did not finish in time."""


def _refs(profile_ids: list[str]) -> dict[str, Any]:
    return {"data": [{"type": "profile", "id": pid} for pid in profile_ids]}


class KlaviyoWriter:
    """Bulk import jobs, CRM lists and their members, and events of one Klaviyo account."""

    def __init__(self, client: KlaviyoClient, *, poll_interval: float = 0.2) -> None:
        self.client = client
        self.api = client.api
        self.poll_interval = poll_interval

    # ------------------------------------------------------------------ profiles
    def start_import(self, profiles: list[dict[str, Any]]) -> str:
        """Start a bulk import job for these profile resources; returns the job id."""
        query = ProfileImportJobCreateQuery.model_validate(
            {
                "data": {
                    "type": "profile-bulk-import-job",
                    "attributes": {"profiles": {"data": profiles}},
                }
            }
        )
        page = self.client._call(
            self.api.Profiles.bulk_import_profiles,
            bucket="bulk_import",
            profile_import_job_create_query=query,
        )
        return str(page["data"]["id"])

    def wait_for_job(self, job_id: str) -> dict[str, Any]:
        """Poll the job until it is complete; its attributes (counts) then."""
        deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
        wait = self.poll_interval
        while True:
            page = self.client._call(
                self.api.Profiles.get_bulk_import_profiles_job, bucket="bulk_import", job_id=job_id
            )
            attrs: dict[str, Any] = page["data"]["attributes"]
            if attrs.get("status") == "complete":
                return attrs
            if attrs.get("status") == "cancelled":
                raise BulkImportFailed(f"Klaviyo bulk import job {job_id} was cancelled")
            if time.monotonic() > deadline:
                raise BulkImportFailed(
                    f"Klaviyo bulk import job {job_id} still {attrs.get('status')} after "
                    f"{JOB_TIMEOUT_SECONDS:.0f}s; run the sync again to resume"
                )
            time.sleep(wait)
            wait = min(wait * 2, 5.0)  # the job endpoints allow 150 requests a minute

    def job_errors(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The per-profile import errors of a finished job."""
        for page in self.client._pages(
            self.api.Profiles.get_errors_for_bulk_import_profiles_job,
            "bulk_import",
            id=job_id,
            page_size=100,
        ):
            yield from page.get("data") or []

    def job_profiles(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The profiles a finished job created or updated (ids with email and phone)."""
        for page in self.client._pages(
            self.api.Profiles.get_profiles_for_bulk_import_profiles_job,
            "bulk_import",
            id=job_id,
            page_size=100,
            fields_profile=["email", "phone_number"],
        ):
            yield from page.get("data") or []

    # ------------------------------------------------------------------ lists
    def find_list(self, name: str) -> str | None:
        """The id of the list named exactly `name`, if the account has one."""
        escaped = name.replace('"', '\\"')
        for page in self.client._pages(
            self.api.Lists.get_lists, "lists", filter=f'equals(name,"{escaped}")'
        ):
            for found in page.get("data") or []:
                if (found.get("attributes") or {}).get("name") == name:
                    return str(found["id"])
        return None

    def create_list(self, name: str) -> str:
        query = ListCreateQuery.model_validate(
            {"data": {"type": "list", "attributes": {"name": name}}}
        )
        page = self.client._call(
            self.api.Lists.create_list, bucket="lists_write", list_create_query=query
        )
        return str(page["data"]["id"])

    def list_member_ids(self, list_id: str) -> set[str]:
        out: set[str] = set()
        for page in self.client._pages(
            self.api.Lists.get_profile_ids_for_list, "lists", id=list_id, page_size=100
        ):
            out.update(str(ref["id"]) for ref in page.get("data") or [])
        return out

    def add_members(self, list_id: str, profile_ids: list[str]) -> None:
        query = ListMembersAddQuery.model_validate(_refs(profile_ids))
        self.client._call(
            self.api.Lists.add_profiles_to_list,
            bucket="lists_write",
            id=list_id,
            list_members_add_query=query,
        )

    def remove_members(self, list_id: str, profile_ids: list[str]) -> None:
        query = ListMembersDeleteQuery.model_validate(_refs(profile_ids))
        self.client._call(
            self.api.Lists.remove_profiles_from_list,
            bucket="lists_write",
            id=list_id,
            list_members_delete_query=query,
        )

    # ------------------------------------------------------------------ events
    def create_event(self, event: dict[str, Any]) -> None:
        """One event resource (`{"type": "event", "attributes": {...}}`)."""
        query = EventCreateQueryV2.model_validate({"data": event})
        self.client._call(
            self.api.Events.create_event, bucket="events_write", event_create_query_v2=query
        )
