"""How a mirror run is tuned (MirrorSettings) and what it reports (MirrorSummary)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import timedelta


@dataclass
class MirrorSettings:
    """Tuning knobs of a mirror run; the defaults suit a 1M-customer first sync."""

    batch_size: int = 5000
    threads: int = 4
    max_attempts: int = 3
    backoff_seconds: float = 0.25
    retry_delay: timedelta = timedelta(minutes=1)
    max_retry_delay: timedelta = timedelta(hours=1)


@dataclass
class MirrorSummary:
    """What a run did; customers are counted once each, documents include subdocuments."""

    run_id: str
    considered: int = 0
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    deferred: int = 0
    retried: int = 0
    documents_written: int = 0
    seconds: float = 0.0
    failed_ids: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def merge(self, other: MirrorSummary) -> None:
        """Add a batch's counts (batches run two at a time, hence the lock)."""
        with self._lock:
            for name in (
                "considered",
                "written",
                "unchanged",
                "deleted",
                "failed",
                "deferred",
                "retried",
                "documents_written",
            ):
                setattr(self, name, getattr(self, name) + getattr(other, name))
            self.failed_ids.extend(other.failed_ids)

    @property
    def docs_per_s(self) -> float:
        """Firestore document writes (including subcollections and deletes) per second."""
        return self.documents_written / self.seconds if self.seconds > 0 else 0.0

    @property
    def customers_per_s(self) -> float:
        return (self.written + self.deleted) / self.seconds if self.seconds > 0 else 0.0

    def as_metadata(self) -> dict[str, float | int]:
        return {
            "considered": self.considered,
            "written": self.written,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "failed": self.failed,
            "deferred": self.deferred,
            "documents_written": self.documents_written,
            "docs_per_s": round(self.docs_per_s, 1),
            "seconds": round(self.seconds, 2),
        }
