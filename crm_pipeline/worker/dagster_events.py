"""Tell Dagster what the worker did, as runless materializations, so the UI still shows it.

The worker applies deliveries outside any run; without these events the asset pages of
webhook_deliveries, customer_metrics and firestore_customer_mirror would look idle while the
data moves. Events are written by one background thread (in cycle order): storing them takes
longer than applying a staff action, and the next cycle should not wait for it. A failure to
report is logged, never fatal: the data work is done.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dagster as dg

from crm_pipeline.changes.refresh import RefreshSummary
from crm_pipeline.webhooks.processor import ProcessReport

log = logging.getLogger(__name__)


def report_cycle(
    instance: dg.DagsterInstance,
    worker_id: str,
    report: ProcessReport,
    refresh: RefreshSummary | None,
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
    if refresh is not None and refresh.customers:
        events.append(
            dg.AssetMaterialization(
                asset_key="customer_metrics",
                description=description,
                metadata={"mode": "touched", "customers_computed": refresh.customers},
            )
        )
    if refresh is not None and refresh.mirror.summary.considered:
        events.append(
            dg.AssetMaterialization(
                asset_key="firestore_customer_mirror",
                description=description,
                metadata=_metadata(refresh.mirror.summary.as_metadata()),
            )
        )
    try:
        for event in events:
            instance.report_runless_asset_event(event)
    except Exception as exc:  # noqa: BLE001 - reporting must not stop the worker
        log.warning("could not report the worker's work to Dagster: %s", exc)


class DagsterReporter:
    """Reports cycles to `instance` from one background thread; `close()` waits for the rest."""

    def __init__(self, instance: dg.DagsterInstance, worker_id: str) -> None:
        self.instance = instance
        self.worker_id = worker_id
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="worker-dagster-events")

    def submit(self, report: ProcessReport, refresh: RefreshSummary | None) -> None:
        self._thread.submit(report_cycle, self.instance, self.worker_id, report, refresh)

    def close(self) -> None:
        self._thread.shutdown(wait=True)


def _metadata(values: dict[str, Any]) -> dict[str, Any]:
    return {k: dg.MetadataValue.json(v) if isinstance(v, dict) else v for k, v in values.items()}
