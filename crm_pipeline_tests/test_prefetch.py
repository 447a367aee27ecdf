"""The background producer: order, errors, early stop, and the switch interval put back."""

from __future__ import annotations

import sys

import pytest

from crm_pipeline.prefetch import prefetch


def test_items_arrive_in_order_and_the_switch_interval_is_restored() -> None:
    before = sys.getswitchinterval()
    seen = []
    for item in prefetch(range(1000), depth=3):
        seen.append(item)
        assert sys.getswitchinterval() <= 0.0005  # shortened while the producer runs
    assert seen == list(range(1000))
    assert sys.getswitchinterval() == before


def test_a_producer_error_reaches_the_consumer() -> None:
    def broken():
        yield 1
        raise ValueError("source broke")

    got = []
    with pytest.raises(ValueError, match="source broke"):
        for item in prefetch(broken()):
            got.append(item)
    assert got == [1]


def test_stopping_early_stops_the_producer() -> None:
    produced = []

    def endless():
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    before = sys.getswitchinterval()
    stream = prefetch(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert len(produced) <= 3 + 2 + 1  # at most depth items ahead, plus the one in hand
    assert sys.getswitchinterval() == before
