"""The shared rate limiter (webhook_receiver/ratelimit.py) against the test database: however
hits arrive (batched or not, from one limiter or several), a budget lets exactly its amount
through per window, and an unreachable database is a 503-type error, never a silent pass."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook_receiver.landing import DatabaseUnavailable
from webhook_receiver.ratelimit import RateLimited, RateLimiter, parse_rate

SHOPS = ("a.myshopify.com", "b.myshopify.com", "c.myshopify.com")


async def _run(dsn: str, limiters: int, hits: list[tuple[int, str]], per_shop: str) -> list[bool]:
    """Send every hit (limiter index, shop) at once; True where it passed."""
    instances = [RateLimiter(dsn, "", per_shop) for _ in range(limiters)]
    for limiter in instances:
        await limiter.start()
    try:

        async def one(index: int, shop: str) -> bool:
            try:
                await instances[index % limiters].hit("shopify", shop)
            except RateLimited as exc:
                assert exc.scope == "shop" and 1 <= exc.retry_after <= 60
                return False
            return True

        return list(await asyncio.gather(*(one(i, shop) for i, shop in hits)))
    finally:
        for limiter in instances:
            await limiter.stop()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    limiters=st.integers(1, 3),
    budget=st.integers(1, 12),
    hits=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(SHOPS)), max_size=60),
)
def test_each_budget_passes_exactly_its_amount(
    database_url: str, clean_db: sa.Engine, limiters: int, budget: int, hits: list
) -> None:
    with clean_db.begin() as conn:
        conn.execute(sa.text("TRUNCATE webhook_rate_windows"))
    passed = asyncio.run(_run(database_url, limiters, hits, f"{budget}/minute"))
    for shop in SHOPS:
        sent = sum(1 for _, s in hits if s == shop)
        through = sum(1 for (_, s), ok in zip(hits, passed, strict=True) if ok and s == shop)
        assert through == min(sent, budget), shop


def test_a_new_window_opens_when_the_last_one_ends(database_url: str, clean_db: sa.Engine) -> None:
    async def scenario() -> list[bool]:
        limiter = RateLimiter(database_url, "2/second", "")
        await limiter.start()
        results = []
        try:
            for pause in (0, 0, 0, 1.1, 0):
                await asyncio.sleep(pause)
                try:
                    await limiter.hit("klaviyo")
                    results.append(True)
                except RateLimited:
                    results.append(False)
        finally:
            await limiter.stop()
        return results

    assert asyncio.run(scenario()) == [True, True, False, True, True]


def test_unreachable_counters_refuse_rather_than_pass() -> None:
    async def scenario() -> None:
        limiter = RateLimiter(
            "postgresql://nobody@127.0.0.1:1/none", "10/second", "", timeout_seconds=0.5
        )
        await limiter.start()
        try:
            await limiter.hit("shopify")
        finally:
            await limiter.stop()

    with pytest.raises(DatabaseUnavailable):
        asyncio.run(scenario())


def test_rates_off_and_on() -> None:
    assert parse_rate("") is None and parse_rate("off") is None
    rate = parse_rate("100/minute")
    assert rate is not None and (rate.amount, rate.seconds) == (100, 60.0)
