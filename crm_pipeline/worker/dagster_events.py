"""Tell Dagster what the worker did, as runless materializations, so the UI still shows it.

The worker applies deliveries outside any run; without these events the asset pages of
webhook_deliveries, customer_metrics and firestore_customer_mirror would look idle while the
data moves. A failure to report is logged, never fatal: the data work is done.
"""

from __future__ import annotations

import logging
from typing import Any

import dagster as dg

from crm_pipeline.webhooks.processor import ProcessReport
from crm_pipeline.worker.refresh import RefreshResult

log = logging.getLogger(__name__)


def report_cycle(
    instance: dg.DagsterInstance,
    worker_id: str,
    report: ProcessReport,
    refresh: RefreshResult | None,
) -> None:
    """One materialization per asset the cycle changed."""
    description = f"crm-pipeline worker {worker_id}"
    events = [
        dg.AssetMaterialization(
            asset_key="webhook_deliveries",
            description=description,
            metadata=_metadata(report.as_metadata()),
        )
    ]
    if refresh is not None and refresh.customers_computed:
        events.append(
            dg.AssetMaterialization(
                asset_key="customer_metrics",
                description=description,
                metadata={"mode": "touched", "customers_computed": refresh.customers_computed},
            )
        )
    if refresh is not None and refresh.mirror.considered:
        events.append(
            dg.AssetMaterialization(
                asset_key="firestore_customer_mirror",
                description=description,
                metadata=_metadata(refresh.mirror.as_metadata()),
            )
        )
    try:
        for event in events:
            instance.report_runless_asset_event(event)
    except Exception as exc:  # noqa: BLE001 - reporting must not stop the worker
        log.warning("could not report the worker's work to Dagster: %s", exc)


def _metadata(values: dict[str, Any]) -> dict[str, Any]:
    return {k: dg.MetadataValue.json(v) if isinstance(v, dict) else v for k, v in values.items()}
