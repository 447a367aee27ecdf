"""Data-quality checks of the Firestore mirror, sized to the run that wrote it."""

import dagster as dg

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.firestore_mirror.assets import firestore_customer_mirror
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource
from crm_pipeline.defs.pipeline.executor import CPU_BOUND
from crm_pipeline.firestore.verify import (
    check_mirror_consistency,
    ids_written_by_run,
    live_customer_count,
    verify_customers,
)

# Jobs that run often and change little: their check reads what the run wrote plus a sample.
RUN_SIZED_JOBS = frozenset({"incremental_sync", "process_webhooks"})
# A run tag that overrides the choice: "full", "sample" or "run".
MODE_TAG = "crm/mirror_check"
MODES = ("full", "sample", "run")


def check_mode(
    job_name: str,
    tags: dict[str, str],
    live_customers: int | None = None,
    full_check_max: int | None = None,
) -> str:
    """ "run" (written ids plus a sample) for frequent jobs, "full" for everything else
    (full_refresh, its nightly schedule, materializations by hand), unless the store holds more
    than `full_check_max` live customers: then "sample" (counts, a random sample read by key,
    the id diff only when the counts differ). A full read-back grows with the whole mirror
    (~6 documents per customer; on the emulator every page of it is a scan of its database),
    so past that size a run that writes everything checks a sample, and the complete
    comparison is asked for by tag or done by `repair_firestore_mirror`."""
    requested = tags.get(MODE_TAG)
    if requested in MODES:
        return requested
    if job_name in RUN_SIZED_JOBS:
        return "run"
    too_big = full_check_max is not None and live_customers is not None
    return "sample" if too_big and live_customers > full_check_max else "full"  # type: ignore[operator]


@dg.asset_check(
    op_tags=CPU_BOUND,
    asset=firestore_customer_mirror,
    description="Firestore matches PostgreSQL: the customers the run wrote plus a random "
    "sample in incremental and webhook runs; otherwise everything (streamed), or counts and a "
    "random sample on stores above the resource's full_check_max_customers.",
)
def firestore_customer_mirror_consistent(
    context: dg.AssetCheckExecutionContext,
    postgres: PostgresResource,
    firestore: FirestoreResource,
) -> dg.AssetCheckResult:
    """Missing, extra and stale documents among the ids looked at. The mode follows the job
    (`check_mode`; tag `crm/mirror_check` overrides); full is nightly via full_refresh.

    Drift is repaired by the `repair_firestore_mirror` job.
    """
    engine, client = postgres.get_engine(), firestore.get_client()
    run = context.run
    mode = check_mode(
        run.job_name,
        dict(run.tags),
        live_customers=live_customer_count(engine),
        full_check_max=firestore.full_check_max_customers,
    )
    if mode == "run":
        written = ids_written_by_run(engine, run.run_id)
        report = verify_customers(engine, client, written, sample=firestore.verify_sample)
    elif mode == "sample":
        report = check_mirror_consistency(engine, client, sample=firestore.check_sample)
    else:
        report = check_mirror_consistency(engine, client)
    return dg.AssetCheckResult(
        passed=report.ok,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=report.as_metadata(),
    )
