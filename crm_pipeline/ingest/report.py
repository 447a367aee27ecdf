"""What a load did, in numbers a person (and the Dagster UI) can read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadReport:
    """Counts of one load; `touched_customer_ids` feeds the downstream recompute."""

    kind: str
    received: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    linked: int = 0
    skipped_redacted: int = 0
    revived: int = 0  # soft-deleted records seen alive again (also counted as updated/unchanged)
    unmatched: int = 0
    quarantined_records: int = 0
    duplicates: int = 0
    deferred_indexes: int = 0
    quarantined: Counter = field(default_factory=Counter)
    touched_customer_ids: set = field(default_factory=set)

    @property
    def quarantined_total(self) -> int:
        """Records quarantined (one record may carry several reasons)."""
        return self.quarantined_records

    @property
    def accounted(self) -> int:
        """Records put in exactly one bucket; equals `received` when nothing was lost."""
        return (
            self.inserted
            + self.linked
            + self.updated
            + self.unchanged
            + self.skipped_redacted
            + self.quarantined_records
            + self.duplicates
        )

    @property
    def quarantine_rate(self) -> float:
        return self.quarantined_total / self.received if self.received else 0.0

    def merge(self, other: LoadReport) -> None:
        for name in (
            "received",
            "inserted",
            "updated",
            "unchanged",
            "linked",
            "skipped_redacted",
            "unmatched",
            "quarantined_records",
            "duplicates",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.quarantined.update(other.quarantined)
        self.touched_customer_ids |= other.touched_customer_ids

    def as_metadata(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "linked_to_existing": self.linked,
            "skipped_redacted": self.skipped_redacted,
            "revived": self.revived,
            "unmatched": self.unmatched,
            "duplicates_in_pull": self.duplicates,
            "accounted": self.accounted,
            "quarantined": self.quarantined_total,
            "quarantine_rate": round(self.quarantine_rate, 6),
            "quarantined_by_reason": dict(self.quarantined.most_common()),
            "customers_touched": len(self.touched_customer_ids),
            "indexes_deferred_for_initial_load": self.deferred_indexes,
        }
