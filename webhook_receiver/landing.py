"""Durable landing of deliveries into `webhook_events` with group commit.

Requests enqueue a row and a future; a few writer tasks (one PostgreSQL connection each) take
every row queued so far (up to `batch_max`, after waiting at most `batch_wait_ms` for company),
insert them in ONE autocommitted statement (one transaction, one commit, one WAL flush), and
only then resolve the futures. A request never hears "accepted" before its row is committed.
While one writer waits on its commit the next batch builds up for another.

Database trouble resolves the futures with DatabaseUnavailable (the route answers 503 and the
sender retries); the writer reconnects on its next batch, with a short pause between attempts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors

log = logging.getLogger(__name__)

# One fixed statement whatever the batch size (arrays + unnest): planned once per connection.
# Binary parameters (%b): text-format arrays would escape every payload with a regex.
INSERT_SQL = """
INSERT INTO webhook_events
    (source, topic, delivery_id, shop_domain, triggered_at, headers, payload, subject_key)
SELECT s, t, d, sd, ta, h::jsonb, p::jsonb, sk
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::timestamptz[],
            %b::text[], %b::text[], %b::text[]) AS u(s, t, d, sd, ta, h, p, sk)
ON CONFLICT (source, delivery_id) DO NOTHING
RETURNING source, delivery_id
"""
_RECONNECT_PAUSE_SECONDS = 0.25


class DatabaseUnavailable(Exception):
    """The row could not be committed now; the sender must retry (503)."""


class RowRejected(Exception):
    """PostgreSQL refused this row's content (e.g. a value jsonb cannot hold)."""


@dataclass(slots=True)
class EventRow:
    """One webhook_events row as the receiver lands it; text fields are already NUL-free."""

    source: str
    topic: str
    delivery_id: str
    shop_domain: str | None
    triggered_at: datetime | None
    headers_json: str
    payload_json: str
    subject_key: str | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.delivery_id)


@dataclass(slots=True)
class _Pending:
    row: EventRow
    future: asyncio.Future[bool] = field(repr=False)


def _columns(rows: Sequence[EventRow]) -> list[list[Any]]:
    return [
        [r.source for r in rows],
        [r.topic for r in rows],
        [r.delivery_id for r in rows],
        [r.shop_domain for r in rows],
        [r.triggered_at for r in rows],
        [r.headers_json for r in rows],
        [r.payload_json for r in rows],
        [r.subject_key for r in rows],
    ]


class Lander:
    """Group-committing writer pool; `land()` returns True if new, False if a duplicate."""

    def __init__(
        self,
        dsn: str,
        *,
        writers: int = 2,
        batch_max: int = 500,
        batch_wait_ms: float = 1.0,
        timeout_seconds: float = 2.0,
        on_batch: object | None = None,
    ) -> None:
        self.dsn = dsn
        self.writers = writers
        self.batch_max = batch_max
        self.batch_wait = batch_wait_ms / 1000.0
        self.timeout = timeout_seconds
        # The writer's own timeouts answer first; this ceiling only guards against a stuck writer.
        self._deadline = timeout_seconds * 2 + 0.5
        self._on_batch = on_batch  # callable(size: int) for metrics
        self._queue: asyncio.Queue[_Pending] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._writer(i), name=f"webhook-writer-{i}")
            for i in range(self.writers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: PERF203 - shutdown
                pass
        self._tasks = []
        if self._queue is not None:
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(DatabaseUnavailable("receiver shutting down"))

    # ------------------------------------------------------------------ requests
    async def land(self, rows: Sequence[EventRow]) -> list[bool]:
        """Commit `rows` durably; per row True (stored now) or False (already there)."""
        if len(rows) == 1:
            return [await self.land_one(rows[0])]
        queue = self._queue
        if queue is None or not self._tasks:
            raise DatabaseUnavailable("landing writer not running")
        loop = asyncio.get_running_loop()
        pendings = [_Pending(row, loop.create_future()) for row in rows]
        for pending in pendings:
            queue.put_nowait(pending)
        try:
            async with asyncio.timeout(self._deadline):
                return list(await asyncio.gather(*(p.future for p in pendings)))
        except TimeoutError as exc:
            raise DatabaseUnavailable("landing timed out") from exc

    async def land_one(self, row: EventRow) -> bool:
        """`land` for the common single-row delivery, with one plain timer instead of a
        timeout context and a list: this runs for every request."""
        queue = self._queue
        if queue is None or not self._tasks:
            raise DatabaseUnavailable("landing writer not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        queue.put_nowait(_Pending(row, future))
        # A hard ceiling so a request never hangs past what the sender waits for.
        timer = loop.call_later(self._deadline, expire_future, future)
        try:
            return await future
        finally:
            timer.cancel()

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless a fresh connection answers within the timeout."""
        try:
            async with asyncio.timeout(self.timeout):
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, connect_timeout=max(2, int(self.timeout)), autocommit=True
                )
                async with conn:
                    await conn.execute("SELECT 1")
        except (TimeoutError, psycopg.Error, OSError) as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    # ------------------------------------------------------------------ writer
    async def _connect(self) -> psycopg.AsyncConnection:
        # Autocommit: each batch is ONE statement, hence its own transaction, committed when the
        # statement returns; no BEGIN/COMMIT round trips. Durability is not negotiable here,
        # whatever the server default says.
        async with asyncio.timeout(self.timeout):
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, connect_timeout=max(2, int(self.timeout)), autocommit=True
            )
            await conn.execute(
                "SELECT set_config('synchronous_commit', 'on', false), "
                "set_config('statement_timeout', %s, false)",
                (f"{int(self.timeout * 1000)}ms",),
            )
        return conn

    async def _take_batch(self) -> list[_Pending]:
        assert self._queue is not None
        first = await self._queue.get()
        batch = [first]
        while len(batch) < self.batch_max and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if len(batch) < self.batch_max and self.batch_wait > 0:
            # A short wait lets concurrent requests share this commit.
            await asyncio.sleep(self.batch_wait)
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
        return [p for p in batch if not p.future.done()]

    async def _writer(self, index: int) -> None:
        conn: psycopg.AsyncConnection | None = None
        last_failure = 0.0
        try:
            while True:
                batch = await self._take_batch()
                if not batch:
                    continue
                if conn is None or conn.closed:
                    if time.monotonic() - last_failure < _RECONNECT_PAUSE_SECONDS:
                        _fail(batch, DatabaseUnavailable("database unavailable"))
                        continue
                    try:
                        conn = await self._connect()
                    except (TimeoutError, psycopg.Error, OSError) as exc:
                        last_failure = time.monotonic()
                        log.warning("writer %d: cannot connect to the database: %s", index, exc)
                        _fail(batch, DatabaseUnavailable("database unavailable"))
                        conn = None
                        continue
                try:
                    await self._write(conn, batch)
                except _ConnectionLost as exc:
                    last_failure = time.monotonic()
                    log.warning("writer %d: database error, reconnecting: %s", index, exc)
                    _fail(batch, DatabaseUnavailable("database unavailable"))
                    await close_quietly(conn)
                    conn = None
                except Exception:
                    # A bug must not kill the writer and leave every later request hanging.
                    log.exception("writer %d: unexpected error", index)
                    _fail(batch, DatabaseUnavailable("landing failed"))
                    await close_quietly(conn)
                    conn = None
        finally:
            if conn is not None:
                await close_quietly(conn)

    async def _write(self, conn: psycopg.AsyncConnection, batch: list[_Pending]) -> None:
        # Duplicates inside one batch: the first copy is "the" insert, later ones are duplicates.
        firsts: dict[tuple[str, str], _Pending] = {}
        for pending in batch:
            firsts.setdefault(pending.row.key, pending)
        rows = [p.row for p in firsts.values()]
        try:
            inserted = await self._insert(conn, rows)
        except _RowData:
            # One unstorable row must not sink the others: retry them one by one.
            inserted = set()
            for row in rows:
                try:
                    inserted |= await self._insert(conn, [row])
                except _RowData as exc:
                    for pending in batch:
                        if pending.row.key == row.key and not pending.future.done():
                            pending.future.set_exception(RowRejected(str(exc)))
        if self._on_batch is not None:
            self._on_batch(len(rows))  # type: ignore[operator]
        for pending in batch:
            if pending.future.done():
                continue
            pending.future.set_result(
                firsts[pending.row.key] is pending and pending.row.key in inserted
            )

    async def _insert(
        self, conn: psycopg.AsyncConnection, rows: Sequence[EventRow]
    ) -> set[tuple[str, str]]:
        try:
            async with asyncio.timeout(self.timeout):
                cur = await conn.execute(INSERT_SQL, _columns(rows))
                result = await cur.fetchall()
        except (
            pg_errors.DataException,
            pg_errors.IntegrityError,
            pg_errors.ProgramLimitExceeded,
        ) as exc:
            raise _RowData(str(exc)) from exc
        except (TimeoutError, psycopg.Error, OSError) as exc:
            # Includes a lost connection during COMMIT: the outcome is unknown, so 503 and let
            # the sender retry; the unique key turns a retry of a committed row into a duplicate.
            raise _ConnectionLost(str(exc)) from exc
        return {(s, d) for s, d in result}


class _RowData(Exception):
    pass


class _ConnectionLost(Exception):
    pass


def expire_future(future: asyncio.Future[Any]) -> None:
    """Fail a waiting request that no writer answered in time (a hard ceiling)."""
    if not future.done():
        future.set_exception(DatabaseUnavailable("landing timed out"))


def _fail(batch: list[_Pending], exc: Exception) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)


async def close_quietly(conn: psycopg.AsyncConnection) -> None:
    """Close a connection being discarded, ignoring whatever it says."""
    try:
        async with asyncio.timeout(1):
            await conn.close()
    except Exception:  # noqa: BLE001 - the connection is being discarded anyway
        pass
