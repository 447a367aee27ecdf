"""In-memory rate limits per source and per shop domain (fixed windows).

Rates use the `limits` notation ("2000/second", "100/minute"); the counting itself is a dict
lookup and an integer add, because it runs on every delivery and `limits`' storage (locks, timer
threads, several calls per hit) cost more than the rest of the checks. Counters are per process:
with N uvicorn workers the effective ceiling is N times the configured rate.
"""

from __future__ import annotations

import math
import time

from limits import parse


class RateLimited(Exception):
    """Over the limit; `retry_after` whole seconds until the window resets."""

    def __init__(self, scope: str, retry_after: int) -> None:
        super().__init__(f"rate limited per {scope}; retry after {retry_after} s")
        self.scope = scope
        self.retry_after = retry_after


class FixedWindow:
    """At most `amount` hits per key in a window of `seconds` that opens at the key's first hit."""

    __slots__ = ("amount", "seconds", "_windows", "_next_sweep")

    def __init__(self, amount: int, seconds: float) -> None:
        self.amount = amount
        self.seconds = seconds
        self._windows: dict[object, list[float]] = {}  # key -> [window end, hits]
        self._next_sweep = 0.0

    def hit(self, key: object, now: float) -> float:
        """Count a hit; 0.0 when allowed, else the seconds until the key's window resets."""
        window = self._windows.get(key)
        if window is None or now >= window[0]:
            if now >= self._next_sweep:  # forget finished windows (per-shop keys come and go)
                self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
                self._next_sweep = now + self.seconds
            window = self._windows[key] = [now + self.seconds, 0.0]
        if window[1] >= self.amount:
            return window[0] - now
        window[1] += 1
        return 0.0


def _parse(rate: str) -> FixedWindow | None:
    text = rate.strip().lower()
    if text in ("", "0", "none", "off", "unlimited"):
        return None
    item = parse(text)
    return FixedWindow(item.amount, float(item.get_expiry()))


class RateLimiter:
    """Checks one delivery against the per-source and per-shop windows."""

    def __init__(self, per_source: str, per_shop: str) -> None:
        self._per_source = _parse(per_source)
        self._per_shop = _parse(per_shop)

    def hit(self, source: str, shop_domain: str | None = None) -> None:
        """Count a delivery; raise RateLimited when a window is full."""
        if self._per_source is None and self._per_shop is None:
            return
        now = time.monotonic()
        if self._per_source is not None:
            wait = self._per_source.hit(source, now)
            if wait:
                raise RateLimited("source", max(1, math.ceil(wait)))
        if shop_domain and self._per_shop is not None:
            wait = self._per_shop.hit((source, shop_domain), now)
            if wait:
                raise RateLimited("shop", max(1, math.ceil(wait)))
