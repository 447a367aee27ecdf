"""Pieces every ingestion asset shares: run config, the quarantine-rate check, metadata."""

from __future__ import annotations

import dagster as dg

from crm_pipeline.ingest.report import LoadReport

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
