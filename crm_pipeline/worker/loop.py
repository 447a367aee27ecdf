"""The worker loop: claim what landed, apply it, refresh what it touched, tell the app and Dagster.

Each cycle runs `process_pending` (the code the process_webhooks job runs, so claims are the same
SKIP LOCKED leases and workers, sensor runs and other workers never apply a delivery twice) for
at most `batch_size` deliveries, then refreshes the touched customers' metrics, scores, segments
and Firestore documents (`crm_pipeline.changes.refresh_touched`, which reads them from the
change log), then writes the admin actions' states, then the dashboard documents (at most every
`dashboard_seconds` while busy), then reports to Dagster. Between cycles it sleeps until the
webhook_events trigger notifies a landing, or `poll_seconds` pass (retries whose backoff ended,
replays and a missed notification are found by that poll).

Stopping (SIGTERM, SIGINT or `stop()`): the delivery being applied finishes, the rest of the
claimed batch is handed back unstarted, and the refresh of what was applied still runs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg
import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.changes.refresh import RefreshSummary, refresh_touched
from crm_pipeline.firestore.mirror import MirrorSettings, sync_dashboard
from crm_pipeline.webhooks.processor import ProcessReport, process_pending
from crm_pipeline.webhooks.queue import Delivery, RetryPolicy
from crm_pipeline.worker.action_documents import mirror_action_states
from crm_pipeline.worker.dagster_events import DagsterReporter
from crm_pipeline.worker.wakeup import Wakeup

log = logging.getLogger(__name__)

# the longest pause between cycles while the database or Firestore keeps failing
_MAX_PAUSE_SECONDS = 30.0


@dataclass(frozen=True)
class WorkerSettings:
    """How much a cycle takes on and how often an idle worker looks at the queue anyway."""

    batch_size: int = 50
    poll_seconds: float = 1.0
    dashboard_seconds: float = 5.0
    policy: RetryPolicy = RetryPolicy()


class Worker:
    """Applies landed deliveries as they arrive until `stop()` (or a signal in `serve()`)."""

    def __init__(
        self,
        engine: sa.Engine,
        dsn: str,
        firestore_client: firestore.Client,
        mirror_settings: MirrorSettings | None = None,
        instance: dg.DagsterInstance | None = None,
        settings: WorkerSettings | None = None,
        after_each: Callable[[Delivery, str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.worker_id = f"worker-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.firestore = firestore_client
        self.mirror_settings = mirror_settings or MirrorSettings()
        self.reporter = DagsterReporter(instance, self.worker_id) if instance is not None else None
        self.settings = settings or WorkerSettings()
        self.wakeup = Wakeup(dsn)
        self._stopping = threading.Event()
        self.cycles = 0
        self.applied = 0
        self._after_each = after_each  # (delivery, status) after each one finished
        self._refresh_due = False
        self._dashboard_due = False
        self._dashboard_at = 0.0
        self._unpublished_actions: set[int] = set()

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def serve(self) -> None:
        """`run()` with SIGTERM and SIGINT turned into a clean stop (main thread only)."""
        with self._stop_on_signals():
            self.run()

    def run(self) -> None:
        log.info("worker %s waiting for deliveries", self.worker_id)
        self.wakeup.start()
        try:
            failures = 0
            while not self.stopping:
                try:
                    report = self.run_once()
                    failures = 0
                except Exception:  # noqa: BLE001 - a database or Firestore outage: wait, retry
                    failures += 1
                    log.exception("worker cycle failed (%d in a row); retrying", failures)
                    pause = min(self.settings.poll_seconds * 2**failures, _MAX_PAUSE_SECONDS)
                    self.wakeup.wait(pause, lambda: self.stopping)
                    continue
                if report.claimed >= self.settings.batch_size:
                    continue  # more may be waiting: no sleep
                self.wakeup.wait(self.settings.poll_seconds, lambda: self.stopping)
        finally:
            self.wakeup.close()
            if self.reporter is not None:
                self.reporter.close()
            log.info(
                "worker %s stopped after %d cycles, %d deliveries",
                self.worker_id,
                self.cycles,
                self.applied,
            )

    def run_once(self) -> ProcessReport:
        """One cycle: apply up to batch_size ready deliveries and publish their effect.

        What was applied but not yet published (a Firestore error last cycle) is published
        with this cycle's work: the deliveries are done in PostgreSQL whatever happens here.
        """
        actions = self._unpublished_actions

        def remember_actions(delivery: Delivery, status: str) -> None:
            if delivery.source == "manual":
                actions.add(delivery.id)
            if self._after_each is not None:
                self._after_each(delivery, status)

        started = time.perf_counter()
        report = process_pending(
            self.engine,
            run_id=self.worker_id,
            batch_size=self.settings.batch_size,
            max_deliveries=self.settings.batch_size,
            policy=self.settings.policy,
            after_each=remember_actions,
            stop=lambda: self.stopping,
        )
        self._refresh_due |= bool(report.touched_customer_ids)
        if not report.claimed and not (self._refresh_due or actions):
            self._refresh_dashboard(idle=True)
            return report
        self.cycles += 1
        self.applied += report.processed
        applied = time.perf_counter()
        refresh: RefreshSummary | None = None
        if self._refresh_due:
            # the change log names the touched customers (and keeps them if this fails)
            refresh = refresh_touched(
                self.engine,
                self.firestore,
                self.mirror_settings,
                run_id=f"{self.worker_id}-{self.cycles}",
                dashboard=False,
            )
            self._refresh_due = False
            self._dashboard_due |= bool(
                refresh.customers
                or refresh.mirror.summary.written
                or refresh.mirror.summary.deleted
            )
        refreshed = time.perf_counter()
        mirror_action_states(self.engine, self.firestore, actions)
        actions.clear()
        published = time.perf_counter()
        for error in report.errors:
            log.warning("webhook delivery failed: %s", error)
        self._refresh_dashboard(idle=False)
        if self.reporter is not None:
            self.reporter.submit(report, refresh)
        log.info(
            "cycle %d: %d deliveries, %d customers; apply %.0f ms, refresh %.0f ms, "
            "action states %.0f ms, dashboard %.0f ms",
            self.cycles,
            report.processed,
            refresh.customers if refresh is not None else 0,
            (applied - started) * 1000,
            (refreshed - applied) * 1000,
            (published - refreshed) * 1000,
            (time.perf_counter() - published) * 1000,
        )
        return report

    def _refresh_dashboard(self, idle: bool) -> None:
        """stats/current and the segment documents: they read every customer, so at most every
        `dashboard_seconds` while deliveries keep coming, and at once when the queue is idle."""
        if not self._dashboard_due:
            return
        if not idle and time.monotonic() - self._dashboard_at < self.settings.dashboard_seconds:
            return
        sync_dashboard(self.engine, self.firestore)
        self._dashboard_due = False
        self._dashboard_at = time.monotonic()

    @contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        def handler(signum: int, _frame: object) -> None:
            log.info("worker %s: %s, stopping", self.worker_id, signal.Signals(signum).name)
            self.stop()

        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, handler) for sig in signals}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
