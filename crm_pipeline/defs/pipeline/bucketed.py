"""`recompute_bucketed`: metrics, segments, the Firestore mirror and the Klaviyo profile sync as
N customer-hash buckets.

One op per bucket and stage, linked by order only (no values pass between steps, so no shared
IO manager is needed): with CRM_DAGSTER_EXECUTOR=k8s each op is its own pod, and each op retries
alone (RetryPolicy; a re-execution from failure reruns only the failed buckets). Metrics of
every bucket come before any bucket's segments (segment percentiles are global); each bucket's
mirror and Klaviyo profiles follow its own segments; the dashboard and the Klaviyo lists and
trigger events (built from everyone) come once after every bucket. Klaviyo steps write only
with KLAVIYO_SYNC_ENABLED=1, like the unbucketed sync asset.

`change_log_position` first records, as a run tag, where the change log stands; once every
bucket's metrics, segments and mirror succeeded, `advance_change_log` moves those consumers
there, so the next incremental run skips what the buckets recomputed but still sees what changed
while they ran. Every op uses one `as_of`: the run tag `crm/as_of` or the run's creation time.
CRM_BUCKETS sets N (default 4) when the definitions load. full_refresh and incremental_sync stay
unpartitioned (docs/scaling.md).
"""

import os
from datetime import UTC, datetime

import dagster as dg

from crm_pipeline.changes.buckets import (
    Bucket,
    advance_covered,
    all_buckets,
    change_log_position,
    metrics_bucket,
    mirror_bucket,
)
from crm_pipeline.changes.buckets import segments_bucket as refresh_bucket_segments
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.activation.assets import ActivationConfig
from crm_pipeline.defs.analytics.assets import parse_as_of
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource
from crm_pipeline.defs.klaviyo.resources import KlaviyoResource
from crm_pipeline.defs.pipeline.executor import CPU_BOUND, execution_config, pipeline_executor
from crm_pipeline.executors import fan_out_executor
from crm_pipeline.firestore.mirror import sync_dashboard

BUCKETS_ENV = "CRM_BUCKETS"
DEFAULT_BUCKETS = 4
AS_OF_TAG = "crm/as_of"
# where the change log stood before the first bucket (a transaction-id horizon)
POSITION_TAG = "crm/change_log_position"
SYNC_OFF = "KLAVIYO_SYNC_ENABLED is not 1"
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
        ins={"start": dg.In(dg.Nothing)},
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


def _klaviyo_failure(exc: Exception, run_id: str) -> dg.Failure:
    return dg.Failure(
        description=(
            f"Klaviyo sync stopped: {exc}. What was accepted is recorded; run the step again "
            "to resume (nothing is sent twice). Details in customer_sync_logs "
            f"(target klaviyo) for run {run_id}."
        )
    )


def _klaviyo_op(bucket: Bucket) -> dg.OpDefinition:
    @dg.op(
        name=f"klaviyo_bucket_{bucket.index}",
        retry_policy=BUCKET_RETRY,
        ins={"segments": dg.In(dg.Nothing)},
        out=dg.Out(dg.Nothing),
    )
    def push(
        context: dg.OpExecutionContext, postgres: PostgresResource, klaviyo: KlaviyoResource
    ) -> None:
        """The changed Klaviyo profiles of one bucket (hash-skipped like the unbucketed sync)."""
        if not klaviyo.writes_enabled():
            context.log.info(
                "%s: bucket %d/%d pushes no profiles", SYNC_OFF, bucket.index, bucket.count
            )
            return
        from crm_pipeline.activation.client import KlaviyoWriter
        from crm_pipeline.activation.sync import push_bucket_profiles
        from crm_pipeline.sources.errors import SourceError

        writer = KlaviyoWriter(klaviyo.get_client())
        try:
            result = push_bucket_profiles(postgres.get_engine(), writer, context.run_id, bucket)
        except SourceError as exc:
            raise _klaviyo_failure(exc, context.run_id) from exc
        context.log.info(
            "bucket %d/%d: %d Klaviyo profiles pushed, %d refused",
            bucket.index,
            bucket.count,
            result.profiles_pushed,
            result.profiles_failed,
        )

    return push


@dg.op(ins={"profiles": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing))
def klaviyo_lists_after_buckets(
    context: dg.OpExecutionContext,
    config: ActivationConfig,
    postgres: PostgresResource,
    klaviyo: KlaviyoResource,
) -> None:
    """CRM segment lists and trigger events, built from everyone once every bucket pushed its
    profiles (a profile changed since its bucket ran is pushed here)."""
    if not klaviyo.writes_enabled():
        context.log.info("%s: no Klaviyo lists or trigger events written", SYNC_OFF)
        return
    from crm_pipeline.activation.client import KlaviyoWriter
    from crm_pipeline.activation.settings import DEFAULT_SEGMENTS
    from crm_pipeline.activation.sync import sync_klaviyo
    from crm_pipeline.sources.errors import SourceError

    writer = KlaviyoWriter(klaviyo.get_client())
    segments = config.segments or list(DEFAULT_SEGMENTS)
    try:
        _, result = sync_klaviyo(postgres.get_engine(), writer, context.run_id, segments)
    except SourceError as exc:
        raise _klaviyo_failure(exc, context.run_id) from exc
    context.log.info("klaviyo sync after the buckets: %s", result.counts() if result else {})


@dg.op(out=dg.Out(dg.Nothing))
def record_change_log_position(
    context: dg.OpExecutionContext, postgres: PostgresResource
) -> None:
    """Record where the change log stands, before any bucket starts, as a run tag every pod
    can read (a re-execution keeps the position its parent run recorded)."""
    found = recorded_position(context.instance, context.run_id)
    if found is not None:
        context.log.info("change log position %d already recorded", found)
        return
    position = change_log_position(postgres.get_engine())
    context.instance.add_run_tags(context.run_id, {POSITION_TAG: str(position)})
    context.log.info("change log position before the buckets: %d", position)


@dg.op(ins={"mirrors": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing))
def advance_change_log(context: dg.OpExecutionContext, postgres: PostgresResource) -> None:
    """Move the metrics, segments and mirror consumers to the recorded position, once every
    bucket's mirror succeeded (the Klaviyo sync compares hashes and has no horizon)."""
    position = recorded_position(context.instance, context.run_id)
    if position is None:
        context.log.warning(
            "no %s tag on this run or its parents: horizons left alone (the next incremental "
            "run recomputes what the buckets did, which is idempotent)",
            POSITION_TAG,
        )
        return
    pruned = advance_covered(postgres.get_engine(), position)
    context.log.info("change log consumers advanced to %d; %d changes pruned", position, pruned)


def recorded_position(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The position tag of the run, else of the run it re-executes (and so on up)."""
    run = instance.get_run_by_id(run_id)  # read again: the tag may be newer than the context
    while run is not None:
        tagged = run.tags.get(POSITION_TAG)
        if tagged:
            return int(tagged)
        run = instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    return None


@dg.op(tags=CPU_BOUND, ins={"mirrors": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing))
def dashboard_after_buckets(postgres: PostgresResource, firestore: FirestoreResource) -> None:
    """The dashboard documents, once every bucket is mirrored (they read every customer)."""
    sync_dashboard(postgres.get_engine(), firestore.get_client())


def bucketed_job(count: int, name: str = "recompute_bucketed") -> dg.JobDefinition:
    """The recompute of metrics, segments, the mirror and Klaviyo profiles as `count` buckets."""
    buckets = all_buckets(count)

    @dg.graph(name=f"{name}_graph")
    def recompute() -> None:
        start = record_change_log_position()
        metrics = [_metrics_op(b)(start=start) for b in buckets]
        segments = {b.index: _segments_op(b)(metrics=metrics) for b in buckets}
        mirrors = [_mirror_op(b)(segments=segments[b.index]) for b in buckets]
        profiles = [_klaviyo_op(b)(segments=segments[b.index]) for b in buckets]
        dashboard_after_buckets(mirrors=mirrors)
        klaviyo_lists_after_buckets(profiles=profiles)
        advance_change_log(mirrors=mirrors)

    executor = fan_out_executor()
    # on one machine in process by default, like full_refresh (a process per op costs more)
    config = {"execution": execution_config(False)} if executor is pipeline_executor else None
    return recompute.to_job(
        name=name,
        executor_def=executor,
        config=config,
        description=f"Recompute metrics, scores, segments, the Firestore mirror and the Klaviyo "
        f"profiles from PostgreSQL as {count} customer-hash buckets ({BUCKETS_ENV}); no pulls.",
    )


recompute_bucketed = bucketed_job(bucket_count())
