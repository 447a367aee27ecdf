"""The one retry policy for every source call: exponential backoff with jitter, bounded attempts.

Clients translate transport failures into `crm_pipeline.sources.errors`; this module retries
exactly the `RetriableSourceError`s, waiting what the server asked for (`Retry-After`) when it
said, and an exponentially growing, jittered delay otherwise.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from crm_pipeline.pii import mask_pii
from crm_pipeline.sources import errors
from crm_pipeline.sources.errors import RetriableSourceError

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 522, 524})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds to wait: delta-seconds ("2", "2.0") or an HTTP date."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class SourceRetryPolicy:
    """How source API calls retry: bounded exponential backoff with full jitter, honouring
    `retry_after` on the error. (Webhook deliveries retry by `webhooks.RetryPolicy`.)"""

    max_attempts: int = 8
    initial_wait: float = 0.5
    max_wait: float = 30.0
    # a server asking for longer than this is not waited for: the call fails instead
    max_retry_after: float = 120.0

    def wait_for(self, attempt: int, error: BaseException | None) -> float:
        retry_after: float | None = getattr(error, "retry_after", None)
        if retry_after is not None:
            # a little jitter so parallel callers do not come back in lockstep
            return min(retry_after, self.max_retry_after) + random.uniform(0, 0.1)
        ceiling = min(self.max_wait, self.initial_wait * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return self.wait_for(state.attempt_number, error)

    def _log(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "attempt %d/%d failed (%s: %s); retrying in %.1fs",
            state.attempt_number,
            self.max_attempts,
            type(error).__name__,
            mask_pii(error),  # a response body may quote the record
            state.next_action.sleep if state.next_action else 0.0,
        )

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` until it succeeds, raises a non-retriable error, or attempts run out."""
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(RetriableSourceError),
            before_sleep=self._log,
            reraise=True,
        )
        return retrying(fn)


DEFAULT_POLICY = SourceRetryPolicy()


def error_for_status(
    status: int, message: str, retry_after: str | None = None
) -> errors.SourceError | None:
    """The source error for a non-2xx HTTP status, or None for success."""
    if 200 <= status < 300:
        return None
    if status == 429:
        return errors.RateLimited(
            message, status=status, retry_after=parse_retry_after(retry_after)
        )
    if status in (401, 403):
        return errors.AuthError(message, status=status)
    if status in RETRIABLE_STATUS or status >= 500:
        return errors.ServerError(
            message, status=status, retry_after=parse_retry_after(retry_after)
        )
    return errors.BadRequest(message, status=status)
