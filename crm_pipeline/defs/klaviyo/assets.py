"""Klaviyo profiles and engagement events, pulled through the REST API."""

from datetime import UTC, datetime

import dagster as dg

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.common import (
    PullConfig,
    load_metadata,
    quarantine_check,
    quarantine_check_spec,
)
from crm_pipeline.defs.klaviyo.resources import KlaviyoResource
from crm_pipeline.ingest.activities import ActivityLoader
from crm_pipeline.ingest.cursors import HighWaterMark, SyncCursor
from crm_pipeline.ingest.customers import CustomerLoader, ReconcileRefused, reconcile_deletions
from crm_pipeline.mapping.klaviyo import METRIC_ACTIVITY, map_event, map_profile
from crm_pipeline.sources.errors import SourceError


@dg.asset(
    group_name="ingestion",
    kinds={"klaviyo", "postgres"},
    deps=["shopify_customers"],
    check_specs=[quarantine_check_spec("klaviyo_profiles")],
)
def klaviyo_profiles(
    context: dg.AssetExecutionContext,
    config: PullConfig,
    klaviyo: KlaviyoResource,
    postgres: PostgresResource,
) -> dg.MaterializeResult:
    """Klaviyo profiles (consent, properties, predictive analytics) merged into customers."""
    engine = postgres.get_engine()
    client = klaviyo.get_client()
    cursor = SyncCursor(engine, "klaviyo.profiles")
    since = None if config.full_refresh else cursor.since()
    mark = HighWaterMark(datetime.now(UTC))
    full = since is None
    loader = CustomerLoader(
        engine,
        origin="api pull",
        origin_detail="klaviyo.profiles",
        run_id=context.run_id,
        reconcile_run_id=context.run_id if full else None,
    )
    try:
        report = loader.load(mark.track(map_profile(p) for p in client.profiles(since)))
        reconcile = reconcile_deletions(engine, "klaviyo", context.run_id) if full else {}
    except (SourceError, ReconcileRefused) as exc:
        raise dg.Failure(description=f"Klaviyo profile pull failed: {exc}") from exc
    cursor.advance(
        mark.value,
        {"run_id": context.run_id, "received": report.received, "accounted": report.accounted},
    )
    return dg.MaterializeResult(
        metadata=load_metadata(
            report,
            mode="full" if full else "incremental",
            cursor=str(mark.value),
            **{f"reconcile_{k}": v for k, v in reconcile.items()},
        ),
        check_results=[quarantine_check(report, config.max_quarantine_rate)],
    )


@dg.asset(
    group_name="ingestion",
    kinds={"klaviyo", "postgres"},
    deps=[klaviyo_profiles],
    check_specs=[quarantine_check_spec("klaviyo_events")],
)
def klaviyo_events(
    context: dg.AssetExecutionContext,
    config: PullConfig,
    klaviyo: KlaviyoResource,
    postgres: PostgresResource,
) -> dg.MaterializeResult:
    """Email opens and clicks, product views, carts, site activity and orders as activities."""
    engine = postgres.get_engine()
    client = klaviyo.get_client()
    cursor = SyncCursor(engine, "klaviyo.events")
    since = None if config.full_refresh else cursor.since()
    mark = HighWaterMark(datetime.now(UTC))
    loader = ActivityLoader(
        engine, origin="api pull", origin_detail="klaviyo.events", run_id=context.run_id
    )
    try:
        metric_names = client.metrics()
        raw = client.events(since, metric_names=set(METRIC_ACTIVITY))
        report = loader.load(
            mark.track((map_event(e, metric_names) for e in raw), key="occurred_at")
        )
    except SourceError as exc:
        raise dg.Failure(description=f"Klaviyo event pull failed: {exc}") from exc
    cursor.advance(
        mark.value,
        {"run_id": context.run_id, "received": report.received, "accounted": report.accounted},
    )
    return dg.MaterializeResult(
        metadata=load_metadata(
            report, mode="incremental" if since else "full", cursor=str(mark.value)
        ),
        check_results=[quarantine_check(report, config.max_quarantine_rate)],
    )
