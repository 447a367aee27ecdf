"""Klaviyo profiles and engagement events, pulled through the REST API."""

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import dagster as dg
import sqlalchemy as sa

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.common import Pull, PullConfig, load_pull, quarantine_check_spec, run_pull
from crm_pipeline.defs.klaviyo.resources import KlaviyoResource
from crm_pipeline.defs.pipeline.executor import API_BOUND
from crm_pipeline.ingest.activities import ActivityLoader
from crm_pipeline.ingest.bad_records import mapped
from crm_pipeline.ingest.customers import CustomerLoader
from crm_pipeline.ingest.workers import map_in_workers
from crm_pipeline.mapping.klaviyo import METRIC_ACTIVITY, map_event, map_profile
from crm_pipeline.sources.klaviyo import KlaviyoClient


def profiles_pull(client: KlaviyoClient) -> Pull:
    """The Klaviyo profiles stream: full pulls mapped and encoded in worker processes, as the
    Shopify customer lines are; a full pull's missing profiles are confirmed gone one
    get-profile each before they are soft-deleted."""

    def fetch(since: datetime | None) -> Iterable[Any]:
        if since is None:  # mapped and encoded in worker processes (ingest/workers.py)
            return map_in_workers(client.profiles(), map_profile, "klaviyo")
        return mapped(client.profiles(since), map_profile, "klaviyo")

    return Pull(
        stream="klaviyo.profiles",
        fetch=fetch,
        map=None,
        loader=CustomerLoader,
        reconcile_source="klaviyo",
        still_alive=client.profiles_alive,
    )


def predictive_pull(client: KlaviyoClient) -> Pull:
    """Klaviyo's predictive_analytics as their own stream (own cursor, 150/min limit): the
    profiles again, with predictions, loaded after the plain pull so the newest source record
    carries them. Never reconciles deletions (the plain pull does)."""
    return Pull(
        stream="klaviyo.predictive",
        fetch=client.predictive_profiles,
        map=map_profile,
        loader=CustomerLoader,
    )


def predictive_after_load(
    context: dg.AssetExecutionContext, config: PullConfig, client: KlaviyoClient
) -> Callable[[sa.Engine], dict[str, Any]]:
    """The predictive stream, run once the plain profile pull has loaded."""

    def run(engine: sa.Engine) -> dict[str, Any]:
        result = load_pull(
            engine, predictive_pull(client), full_refresh=config.full_refresh, run_id=context.run_id
        )
        return {
            "predictive_received": result.report.received,
            "predictive_mode": "full" if result.full else "incremental",
        }

    return run


@dg.asset(
    op_tags=API_BOUND,
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
    """Klaviyo profiles (consent, properties) merged into customers; Klaviyo's predictive
    analytics too, as a second stream, when `KlaviyoResource.predictive_analytics` is set."""
    client = klaviyo.get_client()
    after = predictive_after_load(context, config, client) if klaviyo.wants_predictive() else None
    engine = postgres.get_engine()
    return run_pull(context, config, engine, profiles_pull(client), after, usage=client.usage)


@dg.asset(
    op_tags=API_BOUND,
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
    client = klaviyo.get_client()
    metric_names: dict[str, str] = {}

    def fetch(
        since: datetime | None,
    ) -> Iterable[Any]:  # metric names are read inside the pull, under its error handling
        metric_names.update(client.metrics())
        return client.events(since, metric_names=set(METRIC_ACTIVITY))

    pull = Pull(
        stream="klaviyo.events",
        fetch=fetch,
        map=lambda event: map_event(event, metric_names),
        loader=ActivityLoader,
        cursor_field="occurred_at",
    )
    return run_pull(context, config, postgres.get_engine(), pull, usage=client.usage)
