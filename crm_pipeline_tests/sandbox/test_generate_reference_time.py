"""A store generated for a run reaches up to that run's date (so "new this month" and growth are
not zero in the demo), and stays deterministic for a seed and reference time."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import orjson

from crm_pipeline.sandbox.generate import FILES, generate_store

MOMENT = datetime(2027, 3, 20, 9, tzinfo=UTC)


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for rel in sorted(FILES.values()):
        digest.update((root / rel).read_bytes())
    return digest.hexdigest()


def test_a_store_reaches_its_reference_time_and_is_reproducible(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    generate_store(first, customers=500, seed=4, reference_time=MOMENT)
    generate_store(second, customers=500, seed=4, reference_time=MOMENT)
    assert _digest(first) == _digest(second)
    meta = orjson.loads((first / "store.json").read_bytes())
    assert meta["generated_at"] == MOMENT.isoformat()

    customers = [
        orjson.loads(x) for x in (first / "shopify/customers.jsonl").read_bytes().splitlines()
    ]
    orders = [orjson.loads(x) for x in (first / "shopify/orders.jsonl").read_bytes().splitlines()]
    this_month = MOMENT.strftime("%Y-%m")
    assert any(c["created_at"].startswith(this_month) for c in customers)
    placed = sorted(o["created_at"] for o in orders if o["created_at"][:7] <= this_month)
    assert placed[-1].startswith(this_month)
    journeys = [o["customer_journey_summary"] for o in orders]
    assert {j["ready"] for j in journeys if j} == {True, False}
    assert any(j is None for j in journeys)  # POS and draft orders: no journey
