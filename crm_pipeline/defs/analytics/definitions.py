"""The analytics domain's definitions; the `postgres` resource is bound centrally."""

from pathlib import Path
from typing import Any, Literal

import dagster as dg

from crm_pipeline.analytics.export import export_customers
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.analytics.assets import customer_metrics, customer_segments, customer_stats
from crm_pipeline.defs.analytics.checks import (
    customer_metrics_non_negative_consistent,
    customer_segments_plausible_sizes,
    customer_segments_single_value_segment,
)


class ExportConfig(dg.Config):
    """Where to write, in which format, and the search filters (docs/search.md#filters)."""

    out: str
    format: Literal["csv", "jsonl", "parquet"] = "csv"
    filters: dict[str, Any] = {}


@dg.op(description="Stream the filtered customers with their metrics to a file.")
def export_customers_op(
    context: dg.OpExecutionContext, config: ExportConfig, postgres: PostgresResource
) -> dg.Output[int]:
    count = export_customers(postgres.get_engine(), Path(config.out), config.format, config.filters)
    context.log.info("exported %d customers to %s", count, config.out)
    return dg.Output(count, metadata={"rows": count, "path": config.out, "format": config.format})


@dg.job(
    name="export_customers",
    description="Export filtered customers (op config: out, format csv|jsonl|parquet, filters).",
)
def export_customers_job() -> None:
    export_customers_op()


defs = dg.Definitions(
    assets=[customer_metrics, customer_segments, customer_stats],
    asset_checks=[
        customer_metrics_non_negative_consistent,
        customer_segments_single_value_segment,
        customer_segments_plausible_sizes,
    ],
    jobs=[export_customers_job],
)
