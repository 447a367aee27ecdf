"""Data-quality checks of the Firestore mirror, sized to the run that wrote it."""

import dagster as dg

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.firestore_mirror.assets import firestore_customer_mirror
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource
from crm_pipeline.defs.pipeline.executor import CPU_BOUND
from crm_pipeline.firestore.verify import (
    check_mirror_consistency,
    ids_written_by_run,
    verify_customers,
)

# Jobs that run often and change little: their check reads what the run wrote plus a sample.
RUN_SIZED_JOBS = frozenset({"incremental_sync", "process_webhooks"})
# A run tag that overrides the choice: "full" or "run".
MODE_TAG = "crm/mirror_check"


def check_mode(job_name: str, tags: dict[str, str]) -> str:
    """ "run" (written ids plus a sample) for frequent jobs, "full" for everything else:
    full_refresh, its nightly schedule, repairs and materializations by hand."""
    requested = tags.get(MODE_TAG)
    if requested in ("full", "run"):
        return requested
    return "run" if job_name in RUN_SIZED_JOBS else "full"


@dg.asset_check(
    op_tags=CPU_BOUND,
    asset=firestore_customer_mirror,
    description="Firestore matches PostgreSQL: the customers the run wrote plus a random "
    "sample in incremental and webhook runs, everything (streamed) otherwise.",
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
    if check_mode(run.job_name, dict(run.tags)) == "run":
        written = ids_written_by_run(engine, run.run_id)
        report = verify_customers(engine, client, written, sample=firestore.verify_sample)
    else:
        report = check_mirror_consistency(engine, client)
    return dg.AssetCheckResult(
        passed=report.ok,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=report.as_metadata(),
    )
