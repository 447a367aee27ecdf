"""The error tree of the source clients: retriable (try again later) vs fatal (fix something).

Callers catch `RetriableSourceError` to decide a run can be retried as-is, and
`FatalSourceError` to tell a person what to change (credentials, query, store state).
"""

from __future__ import annotations


class SourceError(Exception):
    """Any failure talking to Shopify or Klaviyo."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetriableSourceError(SourceError):
    """Transient: the same request may succeed later."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class RateLimited(RetriableSourceError):
    """HTTP 429 or a GraphQL THROTTLED error; `retry_after` says how long to wait, if known."""


class ServerError(RetriableSourceError):
    """HTTP 5xx from the API."""


class Timeout(RetriableSourceError):
    """The request timed out or the connection dropped."""


class FatalSourceError(SourceError):
    """Retrying will not help."""


class AuthError(FatalSourceError):
    """401/403: the token or API key is missing, wrong or lacks a scope."""


class BadRequest(FatalSourceError):
    """4xx other than auth and 429, or a GraphQL error in our query."""


class BulkOperationFailed(FatalSourceError):
    """A Shopify bulk operation ended FAILED, CANCELED or EXPIRED, or returned partial data."""

    def __init__(self, message: str, *, status: str | None = None, error_code: str | None = None):
        super().__init__(message)
        self.bulk_status = status
        self.error_code = error_code
