"""What one sandbox server remembers between requests: configuration, faults' dice, counters,
Klaviyo's rate-limit windows and the Shopify side's state."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass

from crm_pipeline.sandbox.klaviyo_activation import KlaviyoWrites
from crm_pipeline.sandbox.klaviyo_profiles import ProfileLookup
from crm_pipeline.sandbox.klaviyo_webhooks import KlaviyoWebhooks
from crm_pipeline.sandbox.shopify.state import ShopifyState
from crm_pipeline.sandbox.store import SandboxStore
from crm_pipeline.sources.rate_limits import KLAVIYO_LIMITS as RATE_LIMITS


class _SlidingWindow:
    """Counts requests in a trailing window; answers how long until one more is allowed."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit, self.seconds = limit, seconds
        self.hits: deque[float] = deque()

    def admit(self, now: float) -> float:
        while self.hits and now - self.hits[0] >= self.seconds:
            self.hits.popleft()
        if len(self.hits) >= self.limit:
            return self.seconds - (now - self.hits[0])
        self.hits.append(now)
        return 0.0


# (burst per second, steady per minute), from Klaviyo's published limits (sources/rate_limits.py)
KLAVIYO_LIMITS = {
    name: (limit.burst_per_second, limit.steady_per_minute) for name, limit in RATE_LIMITS.items()
}


@dataclass
class SandboxConfig:
    fault_rate: float = 0.0
    latency: float = 0.0
    throttle: bool = True
    shopify_plan: str = "standard"  # cost bucket size and restore rate (sandbox/shopify/cost.py)
    rate_limit_429: float = 0.0
    seed: int = 0
    bulk_fail_rate: float = 0.0
    predictive_fault_rate: float | None = None  # default: twice fault_rate
    klaviyo_rate_limits: bool = True
    bulk_seconds: float = 0.3  # minimum RUNNING time, so clients really poll
    # records left out at the end of every customers bulk result and profile listing, answered
    # as complete: the silently short pull a reconcile must not take for deletions; with
    # `drop_counted` off, customersCount leaves them out too (a lagging search index)
    drop_last: int = 0
    drop_counted: bool = True


class SandboxState:
    """Everything mutable the handlers share; one lock guards the small shared counters."""

    def __init__(self, store: SandboxStore, config: SandboxConfig) -> None:
        self.store = store
        self.config = config
        self.rng = random.Random(config.seed)
        self.lock = threading.Lock()
        self.shopify = ShopifyState(config.throttle, config.shopify_plan)
        self.windows = {
            name: (_SlidingWindow(burst, 1.0), _SlidingWindow(steady, 60.0))
            for name, (burst, steady) in KLAVIYO_LIMITS.items()
        }
        self.counters: dict[str, int] = {}
        self.klaviyo_webhooks = KlaviyoWebhooks()
        self.klaviyo_profile_lookup = ProfileLookup(store.profiles)
        self.klaviyo_writes = KlaviyoWrites(store.profiles)

    def count(self, name: str) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    def chance(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self.lock:
            return self.rng.random() < rate

    @property
    def bucket(self) -> float:
        """What is left in Shopify's cost bucket (settable, to start a test throttled)."""
        return self.shopify.bucket.available()

    @bucket.setter
    def bucket(self, level: float) -> None:
        self.shopify.bucket.level = level

    def klaviyo_admit(self, name: str) -> float:
        if not self.config.klaviyo_rate_limits:
            return 0.0
        with self.lock:
            now = time.monotonic()
            burst, steady = self.windows[name]
            wait = burst.admit(now)
            if wait:
                return wait
            wait = steady.admit(now)
            if wait:
                burst.hits.pop()  # the request was refused: it must not count in either window
            return wait

    def close(self) -> None:
        self.shopify.close()
