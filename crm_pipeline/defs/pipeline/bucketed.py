"""`recompute_bucketed`: metrics, segments and the Firestore mirror as N customer-hash buckets.

One op per bucket and stage, linked by order only (no values pass between steps, so no shared
IO manager is needed): with CRM_DAGSTER_EXECUTOR=k8s each op is its own pod, and each op retries
alone (RetryPolicy; a re-execution from failure reruns only the failed buckets). Metrics of
every bucket come before any bucket's segments (segment percentiles are global); each bucket's
mirror follows its own segments; the dashboard comes last. Every op uses one `as_of`: the run
tag `crm/as_of` or the run's creation time. CRM_BUCKETS sets N (default 4) when the definitions
load. full_refresh and incremental_sync stay unpartitioned (docs/scaling.md).
"""

import os
from datetime import UTC, datetime

import dagster as dg

from crm_pipeline.changes.buckets import Bucket, all_buckets, metrics_bucket, mirror_bucket
from crm_pipeline.changes.buckets import segments_bucket as refresh_bucket_segments
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.analytics.assets import parse_as_of
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource
from crm_pipeline.defs.pipeline.executor import CPU_BOUND, execution_config, pipeline_executor
from crm_pipeline.executors import fan_out_executor
from crm_pipeline.firestore.mirror import sync_dashboard

BUCKETS_ENV = "CRM_BUCKETS"
DEFAULT_BUCKETS = 4
AS_OF_TAG = "crm/as_of"
# a bucket's transient failure (a lost connection, a pod evicted) retries that bucket alone
BUCKET_RETRY = dg.RetryPolicy(max_retries=2, delay=10)


def bucket_count() -> int:
    """CRM_BUCKETS as a positive integer (DEFAULT_BUCKETS when unset)."""
    raw = os.environ.get(BUCKETS_ENV, "").strip()
    if not raw:
        return DEFAULT_BUCKETS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{BUCKETS_ENV}={raw!r}: give a whole number of buckets, 1 or more")
    return int(raw)


def run_as_of(context: dg.OpExecutionContext) -> datetime:
    """The moment every bucket computes as of: the `crm/as_of` tag, else the run's creation."""
    tagged = context.run.tags.get(AS_OF_TAG)
    if tagged:
        return parse_as_of(tagged)
    record = context.instance.get_run_record_by_id(context.run_id)
    created = record.create_timestamp if record is not None else None
    return created.astimezone(UTC) if created is not None else datetime.now(UTC)


def _metrics_op(bucket: Bucket) -> dg.OpDefinition:
    @dg.op(
        name=f"metrics_bucket_{bucket.index}",
        tags=CPU_BOUND,
        retry_policy=BUCKET_RETRY,
        out=dg.Out(dg.Nothing),
    )
    def compute(context: dg.OpExecutionContext, postgres: PostgresResource) -> None:
        """Metrics and predictive scores of one bucket (the stored fit of every buyer)."""
        computed = metrics_bucket(postgres.get_engine(), bucket, run_as_of(context))
        context.log.info(
            "bucket %d/%d: metrics of %d customers", bucket.index, bucket.count, computed
        )

    return compute


def _segments_op(bucket: Bucket) -> dg.OpDefinition:
    @dg.op(
        name=f"segments_bucket_{bucket.index}",
        tags=CPU_BOUND,
        retry_policy=BUCKET_RETRY,
        ins={"metrics": dg.In(dg.Nothing)},
        out=dg.Out(dg.Nothing),
    )
    def assign(context: dg.OpExecutionContext, postgres: PostgresResource) -> None:
        """Segment assignments of one bucket, thresholds from everyone."""
        count = refresh_bucket_segments(postgres.get_engine(), bucket, run_as_of(context))
        context.log.info(
            "bucket %d/%d: segments of %d customers", bucket.index, bucket.count, count
        )

    return assign


def _mirror_op(bucket: Bucket) -> dg.OpDefinition:
    @dg.op(
        name=f"mirror_bucket_{bucket.index}",
        tags=CPU_BOUND,
        retry_policy=BUCKET_RETRY,
        ins={"segments": dg.In(dg.Nothing)},
        out=dg.Out(dg.Nothing),
    )
    def mirror(
        context: dg.OpExecutionContext, postgres: PostgresResource, firestore: FirestoreResource
    ) -> None:
        """Firestore documents of one bucket; a bucket with failed writes fails (and retries)."""
        summary = mirror_bucket(
            postgres.get_engine(),
            firestore.get_client(),
            bucket,
            firestore.mirror_settings(),
            run_id=f"{context.run_id}-{bucket.index}",
        )
        context.log.info(
            "bucket %d/%d: mirror %s", bucket.index, bucket.count, summary.as_metadata()
        )
        if summary.failed:
            raise dg.Failure(
                description=f"{summary.failed} Firestore writes of bucket {bucket.index} failed",
                metadata=summary.as_metadata(),
            )

    return mirror


@dg.op(tags=CPU_BOUND, ins={"mirrors": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing))
def dashboard_after_buckets(postgres: PostgresResource, firestore: FirestoreResource) -> None:
    """The dashboard documents, once every bucket is mirrored (they read every customer)."""
    sync_dashboard(postgres.get_engine(), firestore.get_client())


def bucketed_job(count: int, name: str = "recompute_bucketed") -> dg.JobDefinition:
    """The recompute of metrics, segments and the mirror as `count` buckets."""
    buckets = all_buckets(count)

    @dg.graph(name=f"{name}_graph")
    def recompute() -> None:
        metrics = [_metrics_op(b)() for b in buckets]
        mirrors = [_mirror_op(b)(segments=_segments_op(b)(metrics=metrics)) for b in buckets]
        dashboard_after_buckets(mirrors=mirrors)

    executor = fan_out_executor()
    # on one machine in process by default, like full_refresh (a process per op costs more)
    config = {"execution": execution_config(False)} if executor is pipeline_executor else None
    return recompute.to_job(
        name=name,
        executor_def=executor,
        config=config,
        description=f"Recompute metrics, scores, segments and the Firestore mirror from "
        f"PostgreSQL as {count} customer-hash buckets ({BUCKETS_ENV}); no pulls.",
    )


recompute_bucketed = bucketed_job(bucket_count())
