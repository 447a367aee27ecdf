"""Pieces every ingestion asset shares: run config, the quarantine-rate check, metadata."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import dagster as dg
import sqlalchemy as sa

from crm_pipeline.ingest.bad_records import mapped
from crm_pipeline.ingest.base import Loader
from crm_pipeline.ingest.cursors import HighWaterMark, SyncCursor
from crm_pipeline.ingest.customers import (
    ReconcileRefused,
    StillAlive,
    reconcile_deletions,
)
from crm_pipeline.ingest.report import LoadReport
from crm_pipeline.sources.errors import SourceError
from crm_pipeline.sources.rate_limits import ApiUsage

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


def load_metadata(report: LoadReport, **extra: object) -> dict[str, Any]:
    metadata: dict[str, Any] = dict(report.as_metadata())
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
    process); `reconcile_source` names the source whose missing records a full pull
    soft-deletes (customers and profiles only), once `still_alive` (a point lookup at the
    source) does not return them; `incomplete()` says why a full pull is known short, if it is.
    """

    stream: str
    fetch: Callable[[datetime | None], Iterable[Any]]
    map: Callable[[Any], Any] | None
    loader: type[Loader]
    reconcile_source: str | None = None
    cursor_field: str = "source_updated_at"
    still_alive: StillAlive | None = None
    incomplete: Callable[[], str | None] | None = None

    @property
    def source(self) -> str:
        return self.stream.split(".", 1)[0]


@dataclass
class PullResult:
    report: LoadReport
    full: bool
    since: datetime | None
    cursor: datetime | None
    reconcile: dict[str, int]
    extra: dict[str, Any]


def load_pull(
    engine: sa.Engine,
    pull: Pull,
    *,
    full_refresh: bool,
    run_id: str,
    after_load: Callable[[sa.Engine], dict[str, Any]] | None = None,
) -> PullResult:
    """Pull a stream (full or since its cursor), load it, reconcile deletions, move the cursor.

    The cursor only moves after the load committed, and never past the pull's start: a failed
    or cancelled run re-reads the same window next time. Raises `SourceError` or
    `ReconcileRefused` (the assets turn them into a `dg.Failure`).
    """
    cursor = SyncCursor(engine, pull.stream)
    since = None if full_refresh else cursor.since()
    full = since is None
    mark = HighWaterMark(datetime.now(UTC))
    options: dict[str, Any] = {
        "origin": "api pull",
        "origin_detail": pull.stream,
        "run_id": run_id,
        "defer_indexes": full,
    }
    reconciles = full and pull.reconcile_source is not None
    options |= pull.loader.pull_options(
        reconcile_run_id=run_id if reconciles else None, observed_at=mark.started_at
    )
    loader = pull.loader(engine, **options)
    fetched = pull.fetch(since)
    records = fetched if pull.map is None else mapped(fetched, pull.map, pull.source)
    report = loader.load(mark.track(records, key=pull.cursor_field))
    reconcile: dict[str, int] = {}
    if reconciles:
        if pull.still_alive is None:
            raise ReconcileRefused(f"{pull.stream} has no point lookup to confirm deletions")
        reconcile = reconcile_deletions(
            engine,
            cast(str, pull.reconcile_source),  # `reconciles` says it is set
            run_id,
            still_alive=pull.still_alive,
            incomplete=pull.incomplete() if pull.incomplete else None,
        )
    extra = after_load(engine) if after_load else {}
    cursor.advance(
        mark.value,
        {
            "run_id": run_id,
            "mode": "full" if full else "incremental",
            "received": report.received,
            "accounted": report.accounted,
        },
    )
    return PullResult(report, full, since, mark.value, reconcile, extra)


def run_pull(
    context: dg.AssetExecutionContext,
    config: PullConfig,
    engine: sa.Engine,
    pull: Pull,
    after_load: Callable[[sa.Engine], dict[str, Any]] | None = None,
    usage: ApiUsage | None = None,
) -> dg.MaterializeResult:
    """`load_pull` in an asset: failures become `dg.Failure`, the outcome metadata. With the
    client's `usage`, the metadata also says the pull's rate-limit floor and how close the
    step came to it (sources/rate_limits.py)."""
    started = time.monotonic()
    try:
        result = load_pull(
            engine,
            pull,
            full_refresh=config.full_refresh,
            run_id=context.run_id,
            after_load=after_load,
        )
    except (SourceError, ReconcileRefused) as exc:
        raise dg.Failure(description=f"{pull.stream} pull failed: {exc}") from exc
    report = result.report
    budget = usage.metadata(time.monotonic() - started) if usage is not None else {}
    context.log.info("%s: %s %s", pull.stream, report.as_metadata(), budget)
    return dg.MaterializeResult(
        metadata=load_metadata(
            report,
            mode="full" if result.full else "incremental",
            pulled_since=str(result.since) if result.since else "beginning",
            cursor=str(result.cursor),
            **{f"reconcile_{k}": v for k, v in result.reconcile.items()},
            **result.extra,
            **budget,
        ),
        check_results=[quarantine_check(report, config.max_quarantine_rate)],
    )
