"""The rate-limit floor: its arithmetic, and the docs quoting the same numbers."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from crm_pipeline.sandbox.state import KLAVIYO_LIMITS as SANDBOX_LIMITS
from crm_pipeline.sources.rate_limits import (
    KLAVIYO_LIMITS,
    SHOPIFY_RESTORE_PER_SECOND,
    ApiUsage,
    KlaviyoLimit,
)

DOCS = Path(__file__).parents[2] / "docs" / "loading.md"


def test_klaviyo_floor_counts_burst_then_steady_windows() -> None:
    profiles = KLAVIYO_LIMITS["profiles"]
    assert profiles.floor(0) == profiles.floor(1) == 0
    assert profiles.floor(76) == 1.0  # 75 more at 75/s
    assert profiles.floor(701) == 60.0  # the 701st waits for the minute window
    assert profiles.floor(1070) == 60 + 369 / 75
    assert KLAVIYO_LIMITS["profiles_predictive"].floor(1070) > 6 * profiles.floor(1070)


@given(st.integers(0, 20_000), st.integers(0, 2_000), st.integers(1, 400), st.integers(1, 4000))
def test_floor_is_monotonic(n: int, more: int, burst: int, steady: int) -> None:
    limit = KlaviyoLimit(burst, steady)
    assert 0 <= limit.floor(n) <= limit.floor(n + more)


def test_usage_metadata_sums_buckets_and_shopify_cost() -> None:
    usage = ApiUsage()
    for _ in range(701):
        usage.klaviyo("profiles")
    usage.klaviyo("metrics")
    usage.shopify(500.0, 100.0)
    meta = usage.metadata(elapsed=130.0)
    assert meta["api_requests"] == 703
    assert meta["api_requests_profiles"] == 701
    assert meta["api_floor_seconds"] == 65.0  # 60 (profiles) + 0 (one metrics) + 500/100
    assert meta["api_floor_ratio"] == 2.0
    assert ApiUsage().metadata(elapsed=1.0)["api_floor_ratio"] == 0.0


def test_sandbox_and_docs_use_these_numbers() -> None:
    text = DOCS.read_text()
    for name, limit in KLAVIYO_LIMITS.items():
        assert SANDBOX_LIMITS[name] == (limit.burst_per_second, limit.steady_per_minute)
        row = f"| `{name}` | {limit.burst_per_second}/s | {limit.steady_per_minute}/min |"
        assert row in text, row
    for plan, rate in SHOPIFY_RESTORE_PER_SECOND.items():
        assert f"| {plan} | {rate:g} points/s |" in text
