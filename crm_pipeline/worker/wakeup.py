"""Wake the worker when a delivery lands: LISTEN on the channel the webhook_events trigger uses.

sql/0021 notifies `crm_webhook_events` once per inserting statement, at commit. Notifications
that arrive while the worker is busy wait in the connection, so one that lands between a claim
and the next wait still wakes it at once. A lost connection degrades to plain polling and is
reopened on the next wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "crm_webhook_events"
# how long one blocking wait lasts at most, so a stop request is seen this quickly
_SLICE_SECONDS = 0.25


class Wakeup:
    """`wait(seconds)` returns True as soon as a delivery landed, False after `seconds`."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection | None:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            self._conn.execute(f"LISTEN {CHANNEL}")
        except (psycopg.Error, OSError) as exc:
            log.warning("cannot LISTEN for new deliveries (polling instead): %s", exc)
            self._conn = None
        return self._conn

    def start(self) -> None:
        """Listen from now on (call before the first look at the queue, so nothing is missed)."""
        self._connection()

    def wait(self, seconds: float, stopping: Callable[[], bool] = lambda: False) -> bool:
        deadline = time.monotonic() + seconds
        while not stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            conn = self._connection()
            if conn is None:
                time.sleep(min(left, _SLICE_SECONDS))
                continue
            try:
                woke = any(True for _ in conn.notifies(timeout=min(left, _SLICE_SECONDS)))
            except (psycopg.Error, OSError) as exc:
                log.warning("lost the LISTEN connection (reconnecting): %s", exc)
                self.close()
                continue
            if woke:
                return True
        return False

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except (psycopg.Error, OSError):  # already gone
                pass
            self._conn = None
