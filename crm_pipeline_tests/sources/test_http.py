"""The retry policy: what it retries, how long it waits, when it gives up."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from crm_pipeline.sources.errors import AuthError, BadRequest, RateLimited, ServerError
from crm_pipeline.sources.http import SourceRetryPolicy, error_for_status, parse_retry_after


def test_parse_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    in_ten = formatdate(now + 10, usegmt=True)
    assert 8 <= parse_retry_after(in_ten, now=now) <= 11
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now=now) == 0.0


def test_status_mapping() -> None:
    assert isinstance(error_for_status(429, "x", "3"), RateLimited)
    assert error_for_status(429, "x", "3").retry_after == 3.0
    assert isinstance(error_for_status(503, "x"), ServerError)
    assert isinstance(error_for_status(401, "x"), AuthError)
    assert isinstance(error_for_status(400, "x"), BadRequest)
    assert error_for_status(200, "x") is None


def test_retries_retriable_until_success_and_honours_retry_after() -> None:
    calls: list[float] = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RateLimited("slow down", retry_after=0.2)
        if len(calls) == 2:
            raise ServerError("boom", status=502)
        return "ok"

    assert SourceRetryPolicy(initial_wait=0.01, max_wait=0.02).call(flaky) == "ok"
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.2


def test_fatal_is_not_retried_and_attempts_are_bounded() -> None:
    calls = []

    def fatal() -> None:
        calls.append(1)
        raise BadRequest("bad query")

    with pytest.raises(BadRequest):
        SourceRetryPolicy().call(fatal)
    assert len(calls) == 1

    def always_down() -> None:
        calls.append(1)
        raise ServerError("down")

    calls.clear()
    with pytest.raises(ServerError):
        SourceRetryPolicy(max_attempts=3, initial_wait=0.001, max_wait=0.002).call(always_down)
    assert len(calls) == 3
