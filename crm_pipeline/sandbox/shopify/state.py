"""What the Shopify side of one sandbox server remembers between requests."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from crm_pipeline.process_pool import spawn_pool
from crm_pipeline.sandbox.shopify.cost import CostBucket


def render_processes() -> int:
    """Processes that render a big bulk result, one slice each."""
    return min(4, os.cpu_count() or 1)


class ShopifyState:
    """The cost bucket, bulk operations (and their result files) and webhook subscriptions."""

    def __init__(self, throttle: bool = True, plan: str = "standard") -> None:
        self.bucket = CostBucket(throttle, plan)
        self.lock = threading.Lock()
        self.bulk_ops: dict = {}  # gid -> bulk.BulkOperation
        self.bulk_seq = 0
        self.current_bulk = ""
        self.bulk_dir = Path(tempfile.mkdtemp(prefix="crm-sandbox-bulk-"))
        self._render_pool: ProcessPoolExecutor | None = None
        self.webhooks: dict[str, dict] = {}
        self.webhook_seq = 0

    def render_pool(self) -> ProcessPoolExecutor:
        """Processes that render big bulk results, started on first use."""
        with self.lock:
            if self._render_pool is None:
                self._render_pool = spawn_pool(render_processes())
            return self._render_pool

    def close(self) -> None:
        if self._render_pool is not None:
            self._render_pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.bulk_dir, ignore_errors=True)
