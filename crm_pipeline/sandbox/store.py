"""The store directory a sandbox serves (docs/reference.md section 5), as byte-offset indexes.

Built once at startup (cached beside the store by `store_index`), so stores of millions of
records are served without being loaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

from crm_pipeline.sandbox.store_index import JsonlIndex, build_index, read_ids, safe_us

log = logging.getLogger(__name__)


def _shopify_key(rec: dict) -> tuple[int, int]:
    return safe_us(rec.get("updated_at"), rec.get("created_at")), int(rec["id"])


class SandboxStore:
    """Indexes of one store directory (docs/reference.md section 5), built once at startup."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        started = time.monotonic()
        shop = self.root / "shopify"
        kla = self.root / "klaviyo"
        self.customers = self._shopify_index(shop / "customers.jsonl")
        deleted = {int(i) for i in read_ids(shop / "deleted_customers.jsonl") if i is not None}
        if deleted and len(self.customers):
            keep = ~np.isin(self.customers.tags, np.fromiter(deleted, dtype=np.int64))
            self.customers = self.customers.subset(keep)
        self.orders = self._shopify_index(shop / "orders.jsonl")

        self.metrics: list[dict] = []
        metrics_path = kla / "metrics.jsonl"
        if metrics_path.exists():
            with metrics_path.open("rb") as fh:
                self.metrics = [orjson.loads(line) for line in fh if line.strip()]
        self.metric_code = {m["id"]: i for i, m in enumerate(self.metrics)}

        self.profiles = self._klaviyo_index(
            kla / "profiles.jsonl", lambda r: (safe_us(r["attributes"].get("updated")), 0)
        )

        def event_key(rec: dict) -> tuple[int, int]:
            metric_id = ((rec.get("relationships") or {}).get("metric") or {}).get("data") or {}
            code = self.metric_code.get(metric_id.get("id"), -1)
            return safe_us(rec["attributes"].get("datetime")), code

        self.events = self._klaviyo_index(kla / "events.jsonl", event_key)
        self._events_by_metric: dict[int, JsonlIndex] = {}
        self._lock = threading.Lock()
        log.info(
            "sandbox store %s indexed in %.1fs: %d customers, %d orders, %d profiles, %d events",
            self.root,
            time.monotonic() - started,
            len(self.customers),
            len(self.orders),
            len(self.profiles),
            len(self.events),
        )

    @staticmethod
    def _empty(path: Path) -> JsonlIndex:
        z64 = np.zeros(0, dtype=np.int64)
        return JsonlIndex(path, z64, z64, np.zeros(0, dtype=np.int32), z64)

    def _shopify_index(self, path: Path) -> JsonlIndex:
        return build_index(path, _shopify_key) if path.exists() else self._empty(path)

    def _klaviyo_index(self, path: Path, key: Callable[[dict], tuple[int, int]]) -> JsonlIndex:
        return build_index(path, key) if path.exists() else self._empty(path)

    def events_for_metric(self, code: int) -> JsonlIndex:
        with self._lock:
            if code not in self._events_by_metric:
                self._events_by_metric[code] = self.events.subset(self.events.tags == code)
            return self._events_by_metric[code]
