"""When the pipeline jobs run by themselves: off until someone turns them on in the UI."""

from __future__ import annotations

import dagster as dg

incremental_sync_schedule = dg.ScheduleDefinition(
    name="incremental_sync_schedule",
    job_name="incremental_sync",
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Incremental pulls every 15 minutes.",
)

nightly_full_reconcile = dg.ScheduleDefinition(
    name="nightly_full_reconcile",
    job_name="full_refresh",
    cron_schedule="0 2 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly full refresh: catches deletes and anything incremental missed.",
)
