"""Analytics assets: customer metrics with predictive scores, segments and dashboard stats.

Incremental and webhook runs recompute the customers the change log says were touched
(crm_pipeline.changes); full_refresh, `full_recompute` and an `as_of` recompute everyone.
"""

from datetime import datetime
from typing import Any

import dagster as dg

from crm_pipeline.analytics._db import as_utc
from crm_pipeline.analytics.chart_metadata import (
    acquisition_metadata,
    calibration_metadata,
    score_metadata,
)
from crm_pipeline.analytics.segments import INACTIVE_AFTER_DAYS
from crm_pipeline.analytics.stats import read_stats, segment_distribution, stats_markdown
from crm_pipeline.changes.mode import refresh_is_full
from crm_pipeline.changes.refresh import refresh_metrics, refresh_segment_assignments
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.pipeline.executor import CPU_BOUND
from crm_pipeline.normalize import parse_timestamp

GROUP = "analytics"


class AnalyticsConfig(dg.Config):
    """`as_of` (ISO timestamp, default now) backfills history and implies a full recompute."""

    as_of: str | None = None
    full_recompute: bool = False
    # customer_segments: no order and no activity for this many days makes a customer inactive
    inactive_after_days: int = INACTIVE_AFTER_DAYS


def parse_as_of(value: str | None) -> datetime:
    """The configured as_of as aware UTC (naive values are UTC); now when unset."""
    if value is None or not value.strip():
        return as_utc(None)
    moment = parse_timestamp(value)
    if moment is None:
        raise dg.Failure(
            description=f"as_of {value!r} is not an ISO date or timestamp (e.g. 2025-06-01T00:00Z)"
        )
    return moment


def _is_full(context: dg.AssetExecutionContext, config: AnalyticsConfig) -> bool:
    """Everyone when asked (`full_recompute`, a backfill `as_of`, full_refresh, the tag);
    otherwise the customers touched since the last run."""
    return (
        config.full_recompute
        or config.as_of is not None
        or refresh_is_full(context.run.job_name, context.run.tags, default_full=False)
    )


def _number(value: Any) -> dg.MetadataValue | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return dg.MetadataValue.int(value)
    return dg.MetadataValue.float(float(value))


@dg.asset(
    op_tags=CPU_BOUND,
    group_name=GROUP,
    kinds={"postgres"},
    deps=[
        dg.AssetKey("unified_customers"),
        dg.AssetKey("shopify_orders"),
        dg.AssetKey("klaviyo_events"),
        # process_webhooks recomputes the customers its deliveries touched: after them
        dg.AssetKey("webhook_deliveries"),
        # consent from Klaviyo completes the customer record: metrics (and the change log's
        # horizon) come after it, so a full run leaves nothing for the next incremental one
        dg.AssetKey("klaviyo_consent"),
    ],
)
def customer_metrics(
    context: dg.AssetExecutionContext, config: AnalyticsConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Per-customer order, product, engagement metrics and BG/NBD churn, next order and LTV."""
    as_of = parse_as_of(config.as_of)
    full = _is_full(context, config)
    refreshed = refresh_metrics(postgres.get_engine(), as_of, full=full)
    scores = refreshed.scores
    if scores is None:
        context.log.info("no customer changed since the last computation")
        return dg.MaterializeResult(
            metadata={"mode": "incremental", "customers_computed": 0, "as_of": as_of.isoformat()}
        )
    agreement = scores.get("klaviyo_agreement", {})
    metadata: dict[str, Any] = {
        "mode": "full" if full else "incremental",
        "as_of": as_of.isoformat(),
        "customers_computed": refreshed.customers,
        "scoring_method": scores.get("method"),
        "scoring_fallback_reason": scores.get("fallback_reason") or "",
        "customers_scored": scores.get("scored_customers"),
        "scores_written": scores.get("written_customers"),
        "repeat_customers": scores.get("n_repeat"),
        # incremental runs score with the latest stored fit instead of refitting everyone
        "scoring_fit": scores.get("fit") or "",
        "scoring_fit_id": scores.get("fit_id"),
        "scoring_fit_age_days": _number(scores.get("fit_age_days")),
        "scoring_fit_reason": scores.get("fit_reason") or "",
        "model_params": dg.MetadataValue.json(
            {"purchase_model": scores.get("params"), "spend": scores.get("spend_params")}
        ),
        "klaviyo_customers_compared": agreement.get("customers_compared", 0),
    }
    for key in ("churn_spearman", "churn_mean_abs_diff", "ltv_spearman",
                "next_order_mean_abs_diff_days"):  # fmt: skip
        value = _number(agreement.get(key))
        if value is not None:
            metadata[f"klaviyo_{key}"] = value
    context.log.info("metrics: %s", {k: v for k, v in metadata.items() if k != "model_params"})
    if full:  # the diagnostic refits on every buyer: not on each webhook or incremental run
        metadata.update(_as_metadata(calibration_metadata(postgres.get_engine(), as_of)))
    return dg.MaterializeResult(metadata=metadata)


def _as_metadata(values: dict[str, Any]) -> dict[str, Any]:
    """Charts as Markdown, tables as JSON, the rest as they are."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, str) and value.startswith("!["):
            out[key] = dg.MetadataValue.md(value)
        elif isinstance(value, dict):
            out[key] = dg.MetadataValue.json(value)
        else:
            out[key] = value
    return out


@dg.asset(op_tags=CPU_BOUND, group_name=GROUP, kinds={"postgres"}, deps=[customer_metrics])
def customer_segments(
    context: dg.AssetExecutionContext, config: AnalyticsConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Value, engagement, churn-risk, RFM, VIP and tag-driven segment assignments."""
    full = _is_full(context, config)
    refreshed = refresh_segment_assignments(
        postgres.get_engine(),
        parse_as_of(config.as_of),
        full=full,
        inactive_after_days=config.inactive_after_days,
    )
    distribution = segment_distribution(postgres.get_engine())
    metadata: dict[str, Any] = dict(refreshed.summary)
    metadata["mode"] = "full" if full else "incremental"
    metadata["customers_refreshed"] = len(refreshed.window.customer_ids)
    metadata["distribution"] = dg.MetadataValue.json(
        {d["segment_name"]: d["customers"] for d in distribution}
    )
    context.log.info("segments: %s", refreshed.summary)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    op_tags=CPU_BOUND,
    group_name=GROUP,
    kinds={"postgres"},
    deps=[customer_segments, dg.AssetKey("order_attribution")],
)
def customer_stats(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Dashboard numbers (total, active, VIP, average LTV, churn, growth) as plottable metadata;
    the charts on full runs (drawing them costs more than an incremental run's other steps)."""
    engine = postgres.get_engine()
    stats = read_stats(engine)
    distribution = segment_distribution(engine)
    metadata: dict[str, Any] = {}
    for key, value in stats.items():
        number = _number(value)
        if number is not None:
            metadata[key] = number
    metadata["segment_distribution"] = dg.MetadataValue.json(
        {d["segment_name"]: d["customers"] for d in distribution}
    )
    metadata["snapshot"] = dg.MetadataValue.md(stats_markdown(stats, distribution))
    if refresh_is_full(context.run.job_name, context.run.tags, default_full=True):
        counts = {d["segment_name"]: d["customers"] for d in distribution}
        metadata.update(_as_metadata(score_metadata(engine, counts)))
        metadata.update(_as_metadata(acquisition_metadata(engine)))
    return dg.MaterializeResult(metadata=metadata)
