"""Comparison helpers: a pulled REST dict matches a store line modulo representation."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from crm_pipeline.sources.http import SourceRetryPolicy

# fast retries so fault-injection tests take seconds, not minutes
FAST_POLICY = SourceRetryPolicy(
    max_attempts=12, initial_wait=0.01, max_wait=0.05, max_retry_after=1.0
)


def _as_datetime(value: str) -> datetime | None:
    if len(value) < 19 or value[4] != "-" or "T" not in value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _as_decimal(value: str) -> Decimal | None:
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def assert_matches(expected: Any, actual: Any, path: str = "$") -> None:
    """Every field of `expected` is in `actual` with the same meaning.

    Timestamps compare as instants (GraphQL answers in UTC) and money as decimals; extra
    fields in `actual` are allowed (ids of line items, admin_graphql_api_id, ...).
    """
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert_matches(value, actual.get(key), f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        assert len(expected) == len(actual), f"{path}: {len(expected)} != {len(actual)} items"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_matches(e, a, f"{path}[{i}]")
    elif isinstance(expected, str) and isinstance(actual, str) and expected != actual:
        e_dt, a_dt = _as_datetime(expected), _as_datetime(actual)
        if e_dt and a_dt:
            assert e_dt == a_dt, f"{path}: {expected} != {actual}"
            return
        e_num, a_num = _as_decimal(expected), _as_decimal(actual)
        assert e_num is not None and e_num == a_num, f"{path}: {expected!r} != {actual!r}"
    else:
        assert expected == actual, f"{path}: {expected!r} != {actual!r}"
