"""Prometheus metrics of the receiver, in a registry owned by each app instance.

A registry per app (not the global default) lets tests build many apps in one process. With
several uvicorn workers each process counts its own deliveries; a scrape sees one worker unless
PROMETHEUS_MULTIPROC_DIR is set, in which case the multiprocess collector sums them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SOURCES = ("shopify", "klaviyo", "manual")
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class ReceiverMetrics:
    """The counters and histograms named in docs/reference.md section 4."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter(
            "webhook_received_total",
            "Deliveries accepted and committed (new rows), by source.",
            ["source"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "webhook_duplicates_total",
            "Deliveries accepted that were already stored (sender retries), by source.",
            ["source"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "webhook_rejected_total",
            "Deliveries refused, by source and reason (bad_signature, too_large, rate_limited...).",
            ["source", "reason"],
            registry=self.registry,
        )
        self.landing_seconds = Histogram(
            "webhook_landing_seconds",
            "Time from enqueue to durable commit of a delivery, by source.",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "webhook_batch_size",
            "Rows per group-commit transaction.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        # Zero series for every source from the start, so rates and alerts have a baseline;
        # the labelled children are kept because `.labels()` costs a lock per call.
        self.received_by = {s: self.received.labels(s) for s in SOURCES}
        self.duplicates_by = {s: self.duplicates.labels(s) for s in SOURCES}
        self.landing_by = {s: self.landing_seconds.labels(s) for s in SOURCES}

    def render(self) -> bytes:
        """The Prometheus text exposition of this process (or of all, in multiprocess mode)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
