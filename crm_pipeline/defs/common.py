"""Pieces every ingestion asset shares: run config, the quarantine-rate check, metadata."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import sqlalchemy as sa

from crm_pipeline.ingest.bad_records import mapped
from crm_pipeline.ingest.base import Loader
from crm_pipeline.ingest.cursors import HighWaterMark, SyncCursor
from crm_pipeline.ingest.customers import CustomerLoader, ReconcileRefused, reconcile_deletions
from crm_pipeline.ingest.report import LoadReport
from crm_pipeline.sources.errors import SourceError

QUARANTINE_CHECK = "quarantine_rate_below_threshold"


class PullConfig(dg.Config):
    """`full_refresh` re-reads everything (bulk) and reconciles deletes; else incremental."""

    full_refresh: bool = False
    max_quarantine_rate: float = 0.05


def quarantine_check_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        QUARANTINE_CHECK,
        asset=asset,
        description="Fails when more than `max_quarantine_rate` of the run's records were "
        "rejected.",
    )


def quarantine_check(report: LoadReport, threshold: float) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=QUARANTINE_CHECK,
        passed=report.quarantine_rate <= threshold,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "quarantine_rate": report.quarantine_rate,
            "threshold": threshold,
            "quarantined": report.quarantined_total,
            "received": report.received,
            "by_reason": dict(report.quarantined.most_common(20)),
        },
    )


def load_metadata(report: LoadReport, **extra: object) -> dict[str, object]:
    metadata: dict[str, object] = dict(report.as_metadata())
    metadata["quarantined_by_reason"] = dg.MetadataValue.json(
        report.as_metadata()["quarantined_by_reason"]
    )
    metadata.update(extra)
    return metadata


@dataclass
class Pull:
    """One source stream as the ingestion assets pull it.

    `fetch(since)` returns the raw records (`since=None`: everything, e.g. a bulk operation);
    `map` turns one into a record (None: `fetch` returns records, e.g. mapped in a worker
    process); `reconcile_source` names the source whose missing records a
    full pull soft-deletes (customers and profiles only).
    """

    stream: str
    fetch: Callable[[datetime | None], Iterable[Any]]
    map: Callable[[Any], Any] | None
    loader: type[Loader]
    reconcile_source: str | None = None
    cursor_field: str = "source_updated_at"

    @property
    def source(self) -> str:
        return self.stream.split(".", 1)[0]


def run_pull(
    context: dg.AssetExecutionContext,
    config: PullConfig,
    engine: sa.Engine,
    pull: Pull,
    after_load: Callable[[sa.Engine], dict[str, Any]] | None = None,
) -> dg.MaterializeResult:
    """Pull a stream (full or since its cursor), load it, move the cursor, report it.

    The cursor only moves after the load committed, and never past the pull's start: a failed
    or cancelled run re-reads the same window next time.
    """
    cursor = SyncCursor(engine, pull.stream)
    since = None if config.full_refresh else cursor.since()
    full = since is None
    mark = HighWaterMark(datetime.now(UTC))
    options: dict[str, Any] = {
        "origin": "api pull",
        "origin_detail": pull.stream,
        "run_id": context.run_id,
        "defer_indexes": full,
    }
    if pull.loader is CustomerLoader:
        options["reconcile_run_id"] = context.run_id if full and pull.reconcile_source else None
    loader = pull.loader(engine, **options)
    try:
        fetched = pull.fetch(since)
        records = fetched if pull.map is None else mapped(fetched, pull.map, pull.source)
        report = loader.load(mark.track(records, key=pull.cursor_field))
        reconcile = (
            reconcile_deletions(engine, pull.reconcile_source, context.run_id)
            if full and pull.reconcile_source
            else {}
        )
    except (SourceError, ReconcileRefused) as exc:
        raise dg.Failure(description=f"{pull.stream} pull failed: {exc}") from exc
    extra = after_load(engine) if after_load else {}
    cursor.advance(
        mark.value,
        {
            "run_id": context.run_id,
            "mode": "full" if full else "incremental",
            "received": report.received,
            "accounted": report.accounted,
        },
    )
    context.log.info("%s: %s", pull.stream, report.as_metadata())
    return dg.MaterializeResult(
        metadata=load_metadata(
            report,
            mode="full" if full else "incremental",
            pulled_since=str(since) if since else "beginning",
            cursor=str(mark.value),
            **{f"reconcile_{k}": v for k, v in reconcile.items()},
            **extra,
        ),
        check_results=[quarantine_check(report, config.max_quarantine_rate)],
    )
