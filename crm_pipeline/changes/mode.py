"""Which runs refresh only the touched customers and which recompute everyone."""

from __future__ import annotations

from collections.abc import Mapping

#: A run tag that overrides the choice: "full" or "touched".
REFRESH_TAG = "crm/refresh"
#: Frequent jobs: they refresh the customers the change log says were touched.
TOUCHED_JOBS = frozenset({"incremental_sync", "process_webhooks"})
#: The full scan: full_refresh and its nightly schedule also catch anything the log missed.
FULL_JOBS = frozenset({"full_refresh"})


def refresh_is_full(job_name: str, tags: Mapping[str, str], *, default_full: bool) -> bool:
    """Whether a run recomputes everyone: by tag, else by job, else the asset's default for
    materializations by hand (metrics and segments: touched; the mirror: full)."""
    requested = tags.get(REFRESH_TAG)
    if requested in ("full", "touched"):
        return requested == "full"
    if job_name in TOUCHED_JOBS:
        return False
    if job_name in FULL_JOBS:
        return True
    return default_full
