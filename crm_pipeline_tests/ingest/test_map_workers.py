"""Records mapped in worker processes (Klaviyo profiles and events, Shopify orders, imported
files) are the records mapping in process gives, in the same order, bad items included."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crm_pipeline.ingest.workers as workers
from crm_pipeline.ingest.bad_records import WORKER_DIED, Unreadable, mapped
from crm_pipeline.ingest.files import map_import_batch, read_items, read_records
from crm_pipeline.ingest.map_workers import encoded, map_in_workers
from crm_pipeline.mapping.klaviyo import map_event, map_profile
from crm_pipeline.mapping.shopify import map_bulk_order, map_order
from crm_pipeline.sandbox.generate import generate_store
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline.sources.shopify import ShopifyClient

NOW = datetime(2026, 12, 1, tzinfo=UTC)
BAD_ITEMS: list[Any] = [
    42,
    ["not", "an", "object"],
    {"id": "broken", "attributes": "not an object", "relationships": 7},
    Unreadable("klaviyo", "u1", {"_line": 3}, ["record: not valid JSON"]),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store") / "store"
    generate_store(root, 200, seed=11)
    return root


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as fh:
        return [orjson.loads(line) for line in fh]


def _both(items: list[Any], map_one: Any, source: str) -> tuple[list[Any], list[Any]]:
    in_workers = list(map_in_workers(items, map_one, source, batch_size=37))
    in_process = encoded(list(mapped(items, map_one, source)))
    return in_workers, in_process


def _with_bad_items(items: list[Any]) -> list[Any]:
    """`items` with the bad ones spread through them."""
    out = list(items)
    for i, bad in enumerate(BAD_ITEMS):
        out.insert(min(len(out), 5 + i * 40), bad)
    return out


def test_klaviyo_profiles_mapped_and_encoded_in_workers_equal_in_process(store: Path) -> None:
    assert workers.worker_count() > 1  # these machines have 2 cores: the pool path runs
    profiles = _with_bad_items(_jsonl(store / "klaviyo" / "profiles.jsonl"))
    got, want = _both(profiles, map_profile, "klaviyo")
    assert got == want  # records and their COPY encoding, Unreadables where they were
    assert sum(isinstance(r, Unreadable) for r in got) >= 3
    assert workers.worker_pids()  # mapped elsewhere, not here


def test_klaviyo_events_mapped_in_workers_equal_in_process(store: Path) -> None:
    names = {m["id"]: m["attributes"]["name"] for m in _jsonl(store / "klaviyo" / "metrics.jsonl")}
    events = _with_bad_items(_jsonl(store / "klaviyo" / "events.jsonl")[:3000])
    got, want = _both(events, partial(map_event, metric_names=names), "klaviyo")
    assert got == want
    assert {r.activity_type for r in got if not isinstance(r, Unreadable)} - {None}


def test_shopify_bulk_orders_converted_in_workers_equal_in_process(store: Path) -> None:
    with SandboxServer(store, klaviyo_rate_limits=False) as sandbox:
        client = ShopifyClient("sandbox", "token", api_url=sandbox.url)
        nodes = list(client.bulk_orders(rest=False))
        rest = list(client.bulk_orders())
    got = list(map_in_workers(_with_bad_items(nodes), map_bulk_order, "shopify", batch_size=37))
    want = list(mapped(_with_bad_items(rest), map_order, "shopify"))
    assert len(got) == len(want) == len(nodes) + len(BAD_ITEMS)

    def orders(records: list[Any]) -> list[Any]:
        # a node that is no order cannot be converted, where map_order takes a REST dict as is
        return [r for r in records if not isinstance(r, Unreadable) and r.external_id != "broken"]

    assert orders(got) == orders(want)
    assert len(orders(got)) == len(nodes)
    assert any(r.line_items for r in orders(got))


def _write_imports(store: Path, folder: Path) -> Iterator[tuple[Path, str]]:
    lines = (store / "shopify" / "customers.jsonl").read_bytes().splitlines()[:150]
    jsonl = folder / "customers.jsonl"
    jsonl.write_bytes(b"\n".join([*lines[:70], b"not json", b"[1]", b"\xff\xfe", *lines[70:]]))
    yield jsonl, "jsonl"
    csv_file = folder / "klaviyo.csv"
    rows = ["Email,First Name,Last Name,Phone Number,Created"]
    for i, profile in enumerate(_jsonl(store / "klaviyo" / "profiles.jsonl")[:120]):
        attrs = profile["attributes"]
        phone = attrs.get("phone_number") or ""
        rows.append(f"{attrs.get('email') or ''},{attrs.get('first_name') or ''},x{i},{phone},")
    rows.insert(30, "extra@example.com,Too,Many,,,cells,here")
    csv_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    yield csv_file, "klaviyo_csv"


def test_imported_files_mapped_in_workers_equal_in_process(store: Path, tmp_path: Path) -> None:
    for path, fmt in _write_imports(store, tmp_path):
        got = list(read_records(path, fmt, NOW))
        want = map_import_batch(fmt, NOW, list(read_items(path, fmt)))
        assert got == want, fmt
        assert fmt != "jsonl" or sum(isinstance(r, Unreadable) for r in got) == 3
        assert sum(not isinstance(r, Unreadable) for r in got) >= 100, fmt


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
# JSON:API-like dicts with a mix of plausible and arbitrary attributes
records = st.fixed_dictionaries(
    {"id": st.text(max_size=6) | st.integers(), "type": st.sampled_from(["profile", "event"])},
    optional={
        "attributes": st.dictionaries(
            st.sampled_from(
                ["email", "phone_number", "first_name", "updated", "created", "datetime",
                 "location", "properties", "event_properties", "subscriptions"]
            ),
            json_values,
        )
        | json_values,
        "relationships": json_values,
    },
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records | json_values, max_size=12))
def test_any_klaviyo_page_maps_the_same_in_workers(items: list[Any]) -> None:
    for map_one in (map_profile, partial(map_event, metric_names={"m": "Opened Email"})):
        got, want = _both(items, map_one, "klaviyo")
        assert got == want


def die_on_poison(item: dict[str, Any]) -> dict[str, Any]:
    """Module-level (workers import it by name): ends its worker process on a poison item."""
    if item.get("poison"):
        os._exit(3)
    return item


def test_an_item_that_kills_its_worker_is_quarantined_and_the_rest_load() -> None:
    items = [{"id": str(i), "poison": i == 7} for i in range(20)]
    got = list(map_in_workers(items, die_on_poison, "klaviyo", batch_size=5))
    assert [r["id"] if isinstance(r, dict) else r.external_id for r in got] == [
        str(i) for i in range(20)
    ]
    assert got[7] == Unreadable("klaviyo", "7", {"id": "7", "poison": True}, [WORKER_DIED])
