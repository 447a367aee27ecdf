"""What the reverse sync pushes and within which limits (docs/activation.md).

The segment names are `customer_segments.segment_name` values exactly; each gets a Klaviyo list
named `CRM: <segment_name>` (CONTRACT.md section 4). The size limits are the ones Klaviyo's
OpenAPI description states for bulk_import_profiles and add_profiles_to_list.
"""

from __future__ import annotations

from crm_pipeline.analytics.segments import VIP_SEGMENT

DEFAULT_SEGMENTS: tuple[str, ...] = (VIP_SEGMENT, "churn_risk:high", "rfm:champions", "rfm:at_risk")
LIST_PREFIX = "CRM: "
METRIC_ENTERED_SEGMENT = "CRM Entered Segment"
METRIC_NEW_CUSTOMER = "CRM New Customer"

# bulk_import_profiles: "up to 10,000 profiles per request ... maximum payload size is 5MB"
MAX_JOB_PROFILES = 10_000
# the envelope and JSON separators are not in the per-profile sizes we add up: keep a margin
MAX_JOB_BYTES = 5 * 1024 * 1024 - 64 * 1024
MAX_PROFILE_BYTES = 100 * 1024
# add_profiles_to_list / remove_profiles_from_list: "a maximum of 1000 profiles per call"
MAX_LIST_PROFILES = 1_000

ENABLED_VALUES = frozenset({"1"})


def list_name(segment: str) -> str:
    return LIST_PREFIX + segment


def sync_enabled(value: str | None) -> bool:
    """`KLAVIYO_SYNC_ENABLED=1` lets the pipeline write to Klaviyo (CONTRACT.md section 1)."""
    return (value or "").strip() in ENABLED_VALUES
