"""Rate limits per source and per shop domain, counted in PostgreSQL so every replica agrees.

Rates use the `limits` notation ("2000/second", "100/minute"). Each budget is a fixed window
that opens at the budget's first hit, kept as one row of `webhook_rate_windows` (sql/0020): with
per-process counters, N receivers behind a load balancer would let N times the rate through.

One round trip serves many requests: requests queue their hits and a single task sends every
hit queued so far as ONE upsert (arrays + unnest, like landing.py), which returns each budget's
total and the seconds left in its window; the first hits of the batch up to the budget pass, the
rest get 429. While one statement runs the next batch builds up. The database clock opens and
closes the windows, so replicas on different machines share the same windows.
A hit refused by the source's budget still counts against the shop's: both are sent together.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

import psycopg
from limits import parse

from webhook_receiver.landing import DatabaseUnavailable, close_quietly, expire_future

log = logging.getLogger(__name__)

# Keys are sorted so concurrent replicas lock the budget rows in one order (no deadlock).
UPSERT_SQL = """
INSERT INTO webhook_rate_windows AS w (bucket, window_end, hits)
SELECT b, now() + make_interval(secs => s), n
FROM unnest(%b::text[], %b::float8[], %b::int8[]) AS u(b, s, n)
ORDER BY b
ON CONFLICT (bucket) DO UPDATE SET
    hits = CASE WHEN w.window_end > now() THEN w.hits + EXCLUDED.hits ELSE EXCLUDED.hits END,
    window_end = CASE WHEN w.window_end > now() THEN w.window_end ELSE EXCLUDED.window_end END
RETURNING bucket, hits, extract(epoch FROM window_end - now())::float8
"""
SWEEP_SQL = "DELETE FROM webhook_rate_windows WHERE window_end < now() - interval '1 minute'"
_SWEEP_EVERY_SECONDS = 60.0


class RateLimited(Exception):
    """Over the limit; `retry_after` whole seconds until the window resets."""

    def __init__(self, scope: str, retry_after: int) -> None:
        super().__init__(f"rate limited per {scope}; retry after {retry_after} s")
        self.scope = scope
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `amount` hits per window of `seconds`."""

    amount: int
    seconds: float


def parse_rate(rate: str) -> Rate | None:
    """A `limits` rate string as a Rate; None when empty or switched off."""
    text = rate.strip().lower()
    if text in ("", "0", "none", "off", "unlimited"):
        return None
    item = parse(text)
    return Rate(item.amount, float(item.get_expiry()))


@dataclass(slots=True)
class _Hit:
    budgets: list[tuple[str, str, Rate]]  # (scope, bucket, rate), checked in this order
    future: asyncio.Future[None] = field(repr=False)


class RateLimiter:
    """Checks one delivery against the shared per-source and per-shop windows."""

    def __init__(
        self, dsn: str, per_source: str, per_shop: str, *, timeout_seconds: float = 2.0
    ) -> None:
        self.dsn = dsn
        self.timeout = timeout_seconds
        self._per_source = parse_rate(per_source)
        self._per_shop = parse_rate(per_shop)
        self._queue: asyncio.Queue[_Hit] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._per_source is not None or self._per_shop is not None

    async def start(self) -> None:
        if self.enabled:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._counter(), name="webhook-rate-limiter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        while self._queue is not None and not self._queue.empty():
            _settle(self._queue.get_nowait(), DatabaseUnavailable("receiver shutting down"))

    async def hit(self, source: str, shop_domain: str | None = None) -> None:
        """Count a delivery; raise RateLimited when a window is full, DatabaseUnavailable when
        the shared counters cannot be reached."""
        budgets: list[tuple[str, str, Rate]] = []
        if self._per_source is not None:
            budgets.append(("source", f"source:{source}", self._per_source))
        if shop_domain and self._per_shop is not None:
            budgets.append(("shop", f"shop:{source}:{shop_domain}", self._per_shop))
        if not budgets:
            return
        queue = self._queue
        if queue is None or self._task is None or self._task.done():
            raise DatabaseUnavailable("rate limiter not running")
        loop = asyncio.get_running_loop()
        pending = _Hit(budgets, loop.create_future())
        queue.put_nowait(pending)
        timer = loop.call_later(self.timeout * 2 + 0.5, expire_future, pending.future)
        try:
            await pending.future
        finally:
            timer.cancel()

    # ------------------------------------------------------------------ the counting task
    async def _counter(self) -> None:
        assert self._queue is not None
        conn: psycopg.AsyncConnection | None = None
        next_sweep = 0.0
        try:
            while True:
                batch = [await self._queue.get()]
                while not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                batch = [h for h in batch if not h.future.done()]
                if not batch:
                    continue
                try:
                    if conn is None or conn.closed:
                        conn = await self._connect()
                    totals = await self._count(conn, batch)
                    if time.monotonic() >= next_sweep:
                        next_sweep = time.monotonic() + _SWEEP_EVERY_SECONDS
                        await conn.execute(SWEEP_SQL)
                except (TimeoutError, psycopg.Error, OSError) as exc:
                    log.warning("rate limiter: database error: %s", exc)
                    for pending in batch:
                        _settle(pending, DatabaseUnavailable("database unavailable"))
                    if conn is not None:
                        await close_quietly(conn)
                    conn = None
                    await asyncio.sleep(0.25)  # do not hammer a database that is down
                    continue
                _decide(batch, totals)
        finally:
            if conn is not None:
                await close_quietly(conn)

    async def _connect(self) -> psycopg.AsyncConnection:
        # Autocommit: one statement, one transaction. The counters are UNLOGGED and worth
        # nothing after a crash, so the commit need not wait for anything to reach the disk.
        async with asyncio.timeout(self.timeout):
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, connect_timeout=max(2, int(self.timeout)), autocommit=True
            )
            await conn.execute(
                "SELECT set_config('synchronous_commit', 'off', false), "
                "set_config('statement_timeout', %s, false)",
                (f"{int(self.timeout * 1000)}ms",),
            )
        return conn

    async def _count(
        self, conn: psycopg.AsyncConnection, batch: list[_Hit]
    ) -> dict[str, tuple[int, int, float]]:
        """Send the batch's hits; per bucket (hits before this batch, hits in it, seconds left)."""
        counts: dict[str, int] = {}
        seconds: dict[str, float] = {}
        for pending in batch:
            for _, bucket, rate in pending.budgets:
                counts[bucket] = counts.get(bucket, 0) + 1
                seconds[bucket] = rate.seconds
        buckets = sorted(counts)
        async with asyncio.timeout(self.timeout):
            cur = await conn.execute(
                UPSERT_SQL, [buckets, [seconds[b] for b in buckets], [counts[b] for b in buckets]]
            )
            rows = await cur.fetchall()
        return {b: (int(total) - counts[b], counts[b], float(left)) for b, total, left in rows}


def _decide(batch: list[_Hit], totals: dict[str, tuple[int, int, float]]) -> None:
    """The first hits of the batch (queue order) up to each budget pass; the rest are refused."""
    seen: dict[str, int] = {}
    for pending in batch:
        refusal: RateLimited | None = None
        for scope, bucket, rate in pending.budgets:
            before, _, left = totals[bucket]
            seen[bucket] = ordinal = seen.get(bucket, 0) + 1
            if refusal is None and before + ordinal > rate.amount:
                # never past one window (`left` is on the database clock and may round up)
                wait = min(math.ceil(rate.seconds), max(1, math.ceil(left)))
                refusal = RateLimited(scope, wait)
        if not pending.future.done():
            if refusal is None:
                pending.future.set_result(None)
            else:
                pending.future.set_exception(refusal)


def _settle(pending: _Hit, exc: Exception) -> None:
    if not pending.future.done():
        pending.future.set_exception(exc)
