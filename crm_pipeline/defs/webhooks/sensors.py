"""Start process_webhooks when deliveries are waiting and no such run is in progress."""

import dagster as dg

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.webhooks.jobs import process_webhooks
from crm_pipeline.webhooks import queue_stats

_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(job=process_webhooks, minimum_interval_seconds=5)
def webhook_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource
) -> dg.SensorResult | dg.SkipReason:
    """One process_webhooks run at a time; a new one as soon as ready deliveries wait.

    The run key (newest ready id, their attempts, the last processing time) changes whenever
    the queue moved, so a finished run is followed by another only when there is new work.
    """
    running = context.instance.get_run_records(
        filters=dg.RunsFilter(job_name=process_webhooks.name, statuses=_ACTIVE), limit=1
    )
    if running:
        return dg.SkipReason("a process_webhooks run is in progress")
    stats = queue_stats(postgres.get_engine())
    if not stats.ready:
        return dg.SkipReason("no deliveries waiting")
    last = stats.last_processed_at.timestamp() if stats.last_processed_at else 0
    key = f"webhooks:{stats.max_ready_id}:{stats.ready_attempts}:{last:.6f}"
    if key == context.cursor:
        return dg.SkipReason("queue unchanged since the last requested run")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=key, tags={"crm/webhooks_ready": str(stats.ready)})],
        cursor=key,
    )
