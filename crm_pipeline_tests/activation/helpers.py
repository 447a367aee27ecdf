"""Reading the sandbox's Klaviyo state back through the API, as the acceptance tests do."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from crm_pipeline.activation.client import KlaviyoWriter
from crm_pipeline.sources.klaviyo import KlaviyoClient
from crm_pipeline_tests.contracts import klaviyo_openapi as spec
from crm_pipeline_tests.contracts.recording_proxy import Exchange
from crm_pipeline_tests.sources.helpers import FAST_POLICY

WRITE_PATHS = ("/api/profile-bulk-import-jobs", "/api/lists", "/api/events")


def client(url: str) -> KlaviyoClient:
    return KlaviyoClient("pk_test", api_url=url, retry_policy=FAST_POLICY)


def profile(api: KlaviyoClient, profile_id: str) -> dict[str, Any]:
    page = api._call(api.api.Profiles.get_profile, id=profile_id)
    return dict(page["data"]["attributes"])


def list_ids(api: KlaviyoClient) -> dict[str, str]:
    """List name -> id, every list of the account."""
    out: dict[str, str] = {}
    for page in api._pages(api.api.Lists.get_lists, "lists"):
        for found in page.get("data") or []:
            out[found["attributes"]["name"]] = found["id"]
    return out


def list_members(api: KlaviyoClient, list_id: str) -> set[str]:
    return KlaviyoWriter(api).list_member_ids(list_id)


def events_of(api: KlaviyoClient, metric_name: str) -> list[dict[str, Any]]:
    """Events of a metric, read through get-metrics and get-events."""
    metric_id = next((mid for mid, name in api.metrics().items() if name == metric_name), None)
    if metric_id is None:
        return []
    return list(api.events(metric_names={metric_name}))


def writes(exchanges: list[Exchange]) -> list[Exchange]:
    """The exchanges that wrote to Klaviyo."""
    return [ex for ex in exchanges if ex.method != "GET" and ex.path.startswith(WRITE_PATHS)]


def nonconforming(exchanges: list[Exchange]) -> dict[str, list[str]]:
    found = {f"{i} {ex}": spec.problems(ex) for i, ex in enumerate(exchanges)}
    return {k: v for k, v in found.items() if v}


def segment_members(conn: sa.Connection, segment: str) -> set[str]:
    """Klaviyo profile ids of the live, identifiable, unsuppressed members of a segment."""
    rows = conn.execute(
        sa.text(
            """
            SELECT st.klaviyo_profile_id FROM customer_segments s
            JOIN customers c ON c.id = s.customer_id
            JOIN klaviyo_profile_state st ON st.customer_id = c.id
            WHERE s.segment_name = :segment AND c.deleted_at IS NULL AND c.merged_into IS NULL
              AND c.redacted_at IS NULL
              AND (c.email IS NOT NULL OR c.phone_normalized IS NOT NULL)
              AND NOT EXISTS (
                  SELECT 1 FROM customer_sources ks WHERE ks.customer_id = c.id
                    AND ks.source = 'klaviyo' AND ks.deleted_at IS NULL
                    AND jsonb_array_length(coalesce(ks.source_data -> 'attributes'
                        -> 'subscriptions' -> 'email' -> 'marketing' -> 'suppression',
                        '[]'::jsonb)) > 0)
            """
        ),
        {"segment": segment},
    ).all()
    return {r[0] for r in rows}
