"""The Klaviyo reverse sync asset: plans always, writes only with KLAVIYO_SYNC_ENABLED=1."""

import time
from typing import Any

import dagster as dg

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.klaviyo.resources import KlaviyoResource

GROUP = "activation"


class ActivationConfig(dg.Config):
    """Which `customer_segments.segment_name`s get a `CRM: <name>` list and entry events
    (empty: the defaults of crm_pipeline/activation/settings.py)."""

    segments: list[str] = []


@dg.asset(
    group_name=GROUP,
    kinds={"postgres"},
    deps=[
        dg.AssetKey("unified_customers"),
        dg.AssetKey("klaviyo_events"),
        dg.AssetKey("webhook_deliveries"),
    ],
)
def klaviyo_consent(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Marketing consent Klaviyo withdrew (unsubscribes, suppressions) applied to customers."""
    from crm_pipeline.activation.consent import apply_opt_outs

    with postgres.get_engine().begin() as conn:
        changed = apply_opt_outs(conn)
    context.log.info("consent withdrawn in Klaviyo applied to %d customers", len(changed))
    return dg.MaterializeResult(metadata={"customers_opted_out": len(changed)})


@dg.asset(
    group_name=GROUP,
    kinds={"klaviyo", "postgres"},
    deps=[dg.AssetKey("customer_metrics"), dg.AssetKey("customer_segments"), klaviyo_consent],
)
def klaviyo_profile_sync(
    context: dg.AssetExecutionContext,
    config: ActivationConfig,
    postgres: PostgresResource,
    klaviyo: KlaviyoResource,
) -> dg.MaterializeResult:
    """CRM scores and segments on Klaviyo profiles, CRM segment lists and trigger events."""
    # the sync's modules load in the step, not with the code location (fast starts)
    from crm_pipeline.activation.client import KlaviyoWriter
    from crm_pipeline.activation.settings import DEFAULT_SEGMENTS
    from crm_pipeline.activation.sync import sync_klaviyo
    from crm_pipeline.sources.errors import SourceError

    segments = config.segments or list(DEFAULT_SEGMENTS)
    enabled = klaviyo.writes_enabled()
    writer = KlaviyoWriter(klaviyo.get_client()) if enabled else None
    started = time.monotonic()
    try:
        plan, result = sync_klaviyo(postgres.get_engine(), writer, context.run_id, segments)
    except SourceError as exc:
        raise dg.Failure(
            description=(
                f"Klaviyo sync stopped: {exc}. What was accepted is recorded; run the sync again "
                "to resume (nothing is sent twice). Details in customer_sync_logs "
                f"(target klaviyo) for run {context.run_id}."
            )
        ) from exc
    metadata: dict[str, Any] = {
        "sync_enabled": enabled,
        "segments": dg.MetadataValue.json(segments),
        **{f"planned_{k}": v for k, v in plan.counts().items()},
    }
    if result is None:
        context.log.info("KLAVIYO_SYNC_ENABLED is not 1: planned only: %s", plan.counts())
    else:
        metadata.update(result.counts())
        if writer is not None:
            # requests per rate-limit bucket and how close the run came to Klaviyo's floor
            metadata.update(writer.client.usage.metadata(time.monotonic() - started))
        if result.profiles_failed or result.events_failed:
            context.log.warning(
                "Klaviyo refused %d profiles and %d events; see customer_sync_logs",
                result.profiles_failed,
                result.events_failed,
            )
        context.log.info("klaviyo sync: %s", result.counts())
    return dg.MaterializeResult(metadata=metadata)
