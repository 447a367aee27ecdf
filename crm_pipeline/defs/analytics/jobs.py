"""The export job: filtered customers with their metrics, streamed to a file from the UI."""

from typing import Any, Literal

import dagster as dg

from crm_pipeline.analytics.export import export_customers
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.file_roots import PathOutsideRoot, export_path


class ExportConfig(dg.Config):
    """Where to write (inside CRM_EXPORTS_DIR, default CRM_HOME/exports; relative to it), in which
    format, and the search filters (docs/search.md#filters)."""

    out: str
    format: Literal["csv", "jsonl", "parquet"] = "csv"
    filters: dict[str, Any] = {}


@dg.op(description="Stream the filtered customers with their metrics to a file.")
def export_customers_op(
    context: dg.OpExecutionContext, config: ExportConfig, postgres: PostgresResource
) -> dg.Output[int]:
    try:
        out = export_path(config.out)
    except PathOutsideRoot as exc:
        raise dg.Failure(description=str(exc)) from exc
    count = export_customers(postgres.get_engine(), out, config.format, config.filters)
    context.log.info("exported %d customers to %s", count, out)
    return dg.Output(count, metadata={"rows": count, "path": str(out), "format": config.format})


@dg.job(
    name="export_customers",
    description="Export filtered customers (op config: out, format csv|jsonl|parquet, filters).",
)
def export_customers_job() -> None:
    export_customers_op()
