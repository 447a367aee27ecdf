"""In-memory rate limits per source and per shop domain (the `limits` library, fixed window).

Fixed windows cost O(1) per hit, which matters at thousands of deliveries a second. Counters are
per process: with N uvicorn workers the effective ceiling is N times the configured rate.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter


class RateLimited(Exception):
    """Over the limit; `retry_after` whole seconds until the window resets."""

    def __init__(self, scope: str, retry_after: int) -> None:
        super().__init__(f"rate limited per {scope}; retry after {retry_after} s")
        self.scope = scope
        self.retry_after = retry_after


def _parse(rate: str) -> RateLimitItem | None:
    text = rate.strip().lower()
    return None if text in ("", "0", "none", "off", "unlimited") else parse(text)


class RateLimiter:
    """Checks one delivery against the per-source and per-shop windows."""

    def __init__(self, per_source: str, per_shop: str) -> None:
        self._per_source = _parse(per_source)
        self._per_shop = _parse(per_shop)
        self._limiter = FixedWindowRateLimiter(MemoryStorage())

    def hit(self, source: str, shop_domain: str | None = None) -> None:
        """Count a delivery; raise RateLimited when a window is full."""
        if self._per_source is not None and not self._limiter.hit(
            self._per_source, "source", source
        ):
            raise RateLimited("source", self._retry_after(self._per_source, "source", source))
        if (
            shop_domain
            and self._per_shop is not None
            and not self._limiter.hit(self._per_shop, "shop", source, shop_domain)
        ):
            raise RateLimited(
                "shop", self._retry_after(self._per_shop, "shop", source, shop_domain)
            )

    def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        reset_at = self._limiter.get_window_stats(item, *identifiers).reset_time
        return max(1, math.ceil(reset_at - time.time()))
