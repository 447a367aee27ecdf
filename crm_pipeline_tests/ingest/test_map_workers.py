"""Klaviyo profiles and imported files mapped in worker processes give the records, Unreadables
and COPY bytes that mapping them in process gives, in the same order, bad items included."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crm_pipeline.ingest.workers as workers
from crm_pipeline.ingest.bad_records import WORKER_DIED, Unreadable, mapped
from crm_pipeline.ingest.encoding import address_dict, encode_source
from crm_pipeline.ingest.files import decode_import_item, read_items, read_records
from crm_pipeline.mapping.klaviyo import map_profile
from crm_pipeline.mapping.records import CustomerRecord
from crm_pipeline.sandbox.generate import generate_store

NOW = datetime(2026, 12, 1, tzinfo=UTC)
BAD_ITEMS: list[Any] = [
    42,
    ["not", "an", "object"],
    {"id": "broken", "attributes": "not an object"},
    Unreadable("klaviyo", "u1", {"_line": 3}, ["record: not valid JSON"]),
]
FIELDS = (
    "source", "external_id", "source_updated_at", "created_at", "email", "raw_email", "phone",
    "phone_normalized", "link_shopify_id",
)  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store") / "store"
    generate_store(root, 200, seed=11)
    return root


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as fh:
        return [orjson.loads(line) for line in fh]


def assert_same(got: list[Any], want: list[Any]) -> None:
    """Worker records against in-process ones: what the loader reads, and the COPY bytes."""
    assert len(got) == len(want)
    for mine, theirs in zip(got, want, strict=True):
        if isinstance(theirs, Unreadable):
            assert mine == theirs
            continue
        assert isinstance(mine, CustomerRecord) and mine.raw is None
        assert mine.source_record() == theirs.raw
        for field in FIELDS:
            assert getattr(mine, field) == getattr(theirs, field), field
        expected = encode_source(theirs)
        assert mine.encoded.digest == expected.digest
        assert mine.encoded.source_tail == expected.source_tail
        assert mine.encoded.address_tails == expected.address_tails
        assert mine.encoded.customer_tail == expected.customer_tail
        assert orjson.loads(mine.encoded.addresses_json) == [
            address_dict(a) for a in theirs.addresses
        ]


def test_klaviyo_profiles_mapped_in_workers_equal_in_process(store: Path) -> None:
    assert workers.worker_count() > 1  # these machines have 2 cores: the pool path runs
    profiles = _jsonl(store / "klaviyo" / "profiles.jsonl")
    for i, bad in enumerate(BAD_ITEMS):
        profiles.insert(5 + i * 40, bad)
    got = list(workers.map_in_workers(profiles, map_profile, "klaviyo"))
    assert workers.worker_pids()  # mapped elsewhere, not here
    assert_same(got, list(mapped(profiles, map_profile, "klaviyo")))
    assert sum(isinstance(r, Unreadable) for r in got) == len(BAD_ITEMS)


def _write_imports(store: Path, folder: Path) -> Iterator[tuple[Path, str]]:
    lines = (store / "shopify" / "customers.jsonl").read_bytes().splitlines()[:150]
    jsonl = folder / "customers.jsonl"
    jsonl.write_bytes(b"\n".join([*lines[:70], b"not json", b"", b"[1]", b"\xff", *lines[70:]]))
    yield jsonl, "jsonl"
    csv_file = folder / "klaviyo.csv"
    rows = ["Email,First Name,Last Name,Phone Number"]
    for i, profile in enumerate(_jsonl(store / "klaviyo" / "profiles.jsonl")[:120]):
        attrs = profile["attributes"]
        rows.append(f"{attrs.get('email') or ''},{attrs.get('first_name') or ''},x{i},")
    rows.insert(30, "extra@example.com,Too,Many,,cells,here")
    csv_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    yield csv_file, "klaviyo_csv"


def test_imported_files_mapped_in_workers_equal_in_process(store: Path, tmp_path: Path) -> None:
    for path, fmt in _write_imports(store, tmp_path):
        got = list(read_records(path, fmt, NOW))
        want = [decode_import_item(fmt, NOW, item) for item in read_items(path, fmt)]
        assert_same(got, want)
        assert sum(not isinstance(r, Unreadable) for r in got) >= 120, fmt
        if fmt == "jsonl":  # the blank line is skipped, the three bad ones quarantined
            assert [r.record["_line"] for r in got if isinstance(r, Unreadable)] == [71, 73, 74]


text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(-1e9, 1e9) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=10,
)
attribute = st.sampled_from(
    ["email", "phone_number", "first_name", "last_name", "updated", "created", "location",
     "properties", "external_id", "subscriptions"]
)  # fmt: skip
profiles = st.fixed_dictionaries(
    {"id": text | st.integers(0, 10**6), "type": st.just("profile")},
    optional={"attributes": st.dictionaries(attribute, json_values) | json_values},
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(profiles | json_values, max_size=12))
def test_any_klaviyo_page_maps_the_same_in_workers(items: list[Any]) -> None:
    got = list(workers.map_in_workers(items, map_profile, "klaviyo"))
    assert_same(got, list(mapped(items, map_profile, "klaviyo")))


def die_on_poison(item: dict[str, Any]) -> CustomerRecord:
    """Module-level (workers import it by name): ends its worker process on a poison item."""
    if item.get("poison"):
        os._exit(3)
    return CustomerRecord("klaviyo", item["id"], NOW, None, None, None, raw=item)


def test_a_profile_that_kills_its_worker_is_quarantined_and_the_rest_load() -> None:
    items = [{"id": str(i), "poison": i == 7} for i in range(20)]
    got = list(workers.map_in_workers(items, die_on_poison, "klaviyo"))
    assert [r.external_id for r in got] == [str(i) for i in range(20)]
    assert got[7] == Unreadable("klaviyo", "7", {"id": "7", "poison": True}, [WORKER_DIED])
    assert all(isinstance(r, CustomerRecord) for i, r in enumerate(got) if i != 7)
