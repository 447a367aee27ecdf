"""The `import_customers` job: the same file import as `crm-pipeline import`, from the UI."""

from typing import Literal

import dagster as dg

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.file_roots import PathOutsideRoot, import_path
from crm_pipeline.ingest.files import ImportFormatError, import_file, report_lines


class ImportConfig(dg.Config):
    """`path` of a Shopify customer CSV export, a Klaviyo profile CSV export or JSON Lines,
    inside the imports folder (CRM_IMPORTS_DIR, default CRM_HOME/imports; relative to it)."""

    path: str
    format: Literal["auto", "shopify_csv", "klaviyo_csv", "jsonl"] = "auto"
    dry_run: bool = False


@dg.op(description="Stream a customer file into the CRM (validate, resolve, merge).")
def import_customer_file(
    context: dg.OpExecutionContext, config: ImportConfig, postgres: PostgresResource
) -> dg.Output[int]:
    try:
        result = import_file(
            postgres.get_engine(),
            import_path(config.path),
            fmt=config.format,
            dry_run=config.dry_run,
            run_id=context.run_id,
        )
    except (ImportFormatError, PathOutsideRoot) as exc:
        raise dg.Failure(description=str(exc)) from exc
    for line in report_lines(result):
        context.log.info(line)
    report = result.report
    return dg.Output(
        report.received,
        metadata={
            **report.as_metadata(),
            "quarantined_by_reason": dg.MetadataValue.json(dict(report.quarantined)),
            "format": result.format,
            "dry_run": config.dry_run,
            "report": dg.MetadataValue.md("```\n" + "\n".join(report_lines(result)) + "\n```"),
        },
    )


@dg.job(
    description="Import a customer file (config: path, format, dry_run). Terminating the run "
    "keeps the chunks already committed; re-running the same file converges."
)
def import_customers() -> None:
    import_customer_file()
