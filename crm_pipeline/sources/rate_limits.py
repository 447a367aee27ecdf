"""The documented API rate limits, and the floor they put under a pull.

One place for the numbers: the sandbox enforces them (sandbox/state.py), the pull assets report
their floor against them (`ApiUsage.metadata`), and docs/loading.md quotes them (a test checks
the docs agree). A pull's *floor* is the least wall time its requests could take under these
limits; `elapsed / floor` says how close the pull came to it.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class KlaviyoLimit:
    """One Klaviyo rate-limit bucket: a 1-second burst window and a 60-second steady one."""

    burst_per_second: int
    steady_per_minute: int

    def floor(self, requests: int) -> float:
        """Least seconds between the first and the last of `requests` sent under both windows:
        each full steady window costs a minute, the rest go at the burst rate (and never faster
        than the burst rate overall)."""
        if requests <= 1:
            return 0.0
        minutes, rest = divmod(requests - 1, self.steady_per_minute)
        windows = 60.0 * minutes + rest / self.burst_per_second
        return max(windows, (requests - 1) / self.burst_per_second)


# https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling (per endpoint)
KLAVIYO_LIMITS: dict[str, KlaviyoLimit] = {
    "profiles": KlaviyoLimit(75, 700),  # get-profiles, get-profile
    "profiles_predictive": KlaviyoLimit(10, 150),  # get-profiles asking for predictive_analytics
    "events": KlaviyoLimit(350, 3500),
    "metrics": KlaviyoLimit(10, 150),
    "webhooks": KlaviyoLimit(1, 15),
    # the write side used by the reverse sync (crm_pipeline/activation)
    "bulk_import": KlaviyoLimit(10, 150),  # profile bulk import jobs: create, get, errors
    "lists": KlaviyoLimit(75, 750),  # get-lists, list members
    "lists_write": KlaviyoLimit(10, 150),  # create list, add/remove list members
    "events_write": KlaviyoLimit(350, 3500),  # create-event
}

# Shopify Admin GraphQL: a leaky bucket of cost points restored at this many points per second
# (https://shopify.dev/docs/api/usage/limits); bulk operations cost only their start and polls.
SHOPIFY_RESTORE_PER_SECOND: dict[str, float] = {
    "standard": 100.0,
    "advanced": 200.0,
    "plus": 1000.0,
}


@dataclass
class ApiUsage:
    """What one client spent: requests per Klaviyo bucket, GraphQL cost points for Shopify.

    Thread-safe counters (a pull may fetch from worker threads)."""

    klaviyo_requests: Counter[str] = field(default_factory=Counter)
    shopify_requests: int = 0
    shopify_cost: float = 0.0
    shopify_restore_rate: float = SHOPIFY_RESTORE_PER_SECOND["standard"]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def klaviyo(self, bucket: str) -> None:
        with self._lock:
            self.klaviyo_requests[bucket] += 1

    def shopify(self, cost: float, restore_rate: float | None) -> None:
        with self._lock:
            self.shopify_requests += 1
            self.shopify_cost += cost
            if restore_rate:
                self.shopify_restore_rate = restore_rate

    def floor(self) -> float:
        """Seconds the documented limits require at least. Klaviyo buckets add up because a
        pull's phases (metrics then events, pages then deletion lookups) run one after another;
        Shopify's floor is cost points over the restore rate (a bulk operation's export time is
        Shopify's own and has no documented floor, so only its start and polls count)."""
        klaviyo = sum(KLAVIYO_LIMITS[b].floor(n) for b, n in self.klaviyo_requests.items())
        shopify = self.shopify_cost / self.shopify_restore_rate if self.shopify_cost else 0.0
        return klaviyo + shopify

    def metadata(self, elapsed: float) -> dict[str, float | int]:
        """Materialization metadata: requests, floor and how close `elapsed` came to it."""
        floor = self.floor()
        out: dict[str, float | int] = {
            "api_requests": sum(self.klaviyo_requests.values()) + self.shopify_requests,
            "api_floor_seconds": round(floor, 3),
            "api_elapsed_seconds": round(elapsed, 3),
            # elapsed / floor; 0 when the limits put no floor under the pull (one request)
            "api_floor_ratio": round(elapsed / floor, 3) if floor > 0 else 0.0,
        }
        for bucket, n in sorted(self.klaviyo_requests.items()):
            out[f"api_requests_{bucket}"] = n
        if self.shopify_requests:
            out["api_cost_points"] = round(self.shopify_cost, 1)
        return out
