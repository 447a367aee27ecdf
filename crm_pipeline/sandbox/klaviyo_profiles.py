"""Point lookups of Klaviyo profiles by id (`GET /api/profiles/{id}/`) in the sandbox store.

The profiles index is sorted by `updated` for the paged pulls; a lookup by id needs its own
map, built by one pass over the file on the first lookup so stores that are only pulled never
pay for it.
"""

from __future__ import annotations

import threading

from crm_pipeline.sandbox.store_index import JsonlIndex


class ProfileLookup:
    """Profile id -> the profile's store record."""

    def __init__(self, index: JsonlIndex) -> None:
        self.index = index
        self._positions: dict[str, int] | None = None
        self._lock = threading.Lock()

    def _build(self) -> dict[str, int]:
        return {str(rec.get("id")): pos for pos, rec in self.index.iter_range(0)}

    def get(self, profile_id: str) -> dict | None:
        with self._lock:
            if self._positions is None:
                self._positions = self._build()
        pos = self._positions.get(profile_id)
        return None if pos is None else self.index.read(pos)
