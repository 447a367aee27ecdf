"""Bulk lines decoded in worker processes give the records and bytes decoding in-process gives."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import orjson
import pytest
import sqlalchemy as sa

import crm_pipeline.ingest.workers as workers
from crm_pipeline.ingest.bad_records import NOT_JSON, WORKER_DIED, Unreadable
from crm_pipeline.ingest.customers import CustomerLoader
from crm_pipeline.ingest.encoding import address_dict, encode_source
from crm_pipeline.ingest.workers import decode_in_workers
from crm_pipeline.mapping.shopify import map_bulk_customer_line
from crm_pipeline.sandbox.generate import generate_store
from crm_pipeline.sandbox.shopify.nodes import customer_node


@pytest.fixture(scope="module")
def bulk_lines(tmp_path_factory) -> list[bytes]:
    """A generated store's customers as the lines of a customers bulk-operation result."""
    store = tmp_path_factory.mktemp("store")
    generate_store(store, 300, seed=5)
    with (store / "shopify" / "customers.jsonl").open("rb") as fh:
        return [orjson.dumps(customer_node(orjson.loads(line))) for line in fh]


def test_worker_records_equal_in_process_records(bulk_lines) -> None:
    assert workers.worker_count() > 1  # these machines have 2 cores: the pool path runs
    got = list(decode_in_workers(bulk_lines, map_bulk_customer_line, batch_size=37))
    want = [map_bulk_customer_line(line) for line in bulk_lines]
    assert len(got) == len(want) == len(bulk_lines)
    assert workers.worker_pids()  # decoded elsewhere, not here
    for mine, theirs in zip(got, want, strict=True):  # same order, same content
        assert mine.raw is None  # decoded again only when needed
        assert mine.source_record() == theirs.raw
        for field in (
            "source", "external_id", "source_updated_at", "created_at", "email", "raw_email",
            "phone", "phone_normalized", "link_shopify_id",
        ):  # fmt: skip
            assert getattr(mine, field) == getattr(theirs, field), field
        expected = encode_source(theirs)
        assert mine.encoded.digest == expected.digest
        assert mine.encoded.source_tail == expected.source_tail
        assert mine.encoded.address_tails == expected.address_tails
        assert mine.encoded.customer_tail == expected.customer_tail
        assert orjson.loads(mine.encoded.addresses_json) == [
            address_dict(a) for a in theirs.addresses
        ]


def test_single_core_decodes_in_process_with_the_same_records(bulk_lines, monkeypatch) -> None:
    monkeypatch.setattr(workers, "worker_count", lambda: 1)
    got = list(decode_in_workers(bulk_lines[:50], map_bulk_customer_line))
    assert [r.source_record() for r in got] == [
        map_bulk_customer_line(line).raw for line in bulk_lines[:50]
    ]


def test_an_undecodable_line_comes_out_unreadable_with_its_line_number(bulk_lines) -> None:
    lines = [*bulk_lines[:120], b'{"id": "gid://shopify/Customer/1", "email": ', *bulk_lines[120:]]
    got = list(decode_in_workers(lines, map_bulk_customer_line, batch_size=50))
    assert len(got) == len(lines)
    bad = got[120]
    assert isinstance(bad, Unreadable) and bad.reasons == [NOT_JSON]
    assert bad.record["_line"] == 121


def test_worker_records_load_and_quarantine_with_their_raw_record(clean_db, bulk_lines) -> None:
    broken = orjson.loads(bulk_lines[0])
    broken["email"] = "not-an-email"
    lines = [orjson.dumps(broken), *bulk_lines[1:]]
    report = CustomerLoader(clean_db, origin="api pull").load(
        decode_in_workers(lines, map_bulk_customer_line, batch_size=64), chunk_size=100
    )
    assert report.received == len(lines) and report.inserted > 0
    with clean_db.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT record->>'email' AS email, record->>'id' AS id FROM quarantined_records "
                "WHERE 'email: invalid_email' = ANY(reasons) AND record->>'email' = 'not-an-email'"
            )
        ).one()
        addresses = conn.execute(sa.text("SELECT count(*) FROM customer_addresses")).scalar_one()
    assert row.id == broken["id"].rsplit("/", 1)[-1]
    assert addresses > 0


def test_a_changed_record_from_a_worker_merges_its_addresses(clean_db, bulk_lines) -> None:
    def load(lines):
        loader = CustomerLoader(clean_db, origin="api pull")
        return loader.load(decode_in_workers(lines, map_bulk_customer_line), chunk_size=100)

    load(bulk_lines)
    node = next(n for n in map(orjson.loads, bulk_lines) if n["addresses"])
    node["addresses"][0]["city"] = "Nowhere Springs"
    node["updatedAt"] = datetime.now(UTC).isoformat()  # newer than anything generated
    report = load([orjson.dumps(node)])
    assert report.updated == 1
    with clean_db.connect() as conn:
        cities = (
            conn.execute(
                sa.text(
                    "SELECT city FROM customer_addresses WHERE source = 'shopify' "
                    "AND source_external_id = :id"
                ),
                {"id": node["id"].rsplit("/", 1)[-1]},
            )
            .scalars()
            .all()
        )
    assert "Nowhere Springs" in cities


def die_on_marker(line: bytes):
    """A decoder whose worker process dies on one line (module-level: workers import it)."""
    if line == b"die":
        os._exit(1)
    return map_bulk_customer_line(line)


def test_a_dead_worker_sets_aside_only_its_line_and_the_next_pull_gets_a_new_pool(
    bulk_lines,
) -> None:
    lines = [*bulk_lines[:30], b"die", *bulk_lines[30:60]]
    got = list(decode_in_workers(lines, die_on_marker, batch_size=10))
    assert [getattr(r, "external_id", None) for r in got if not isinstance(r, Unreadable)] == [
        map_bulk_customer_line(line).external_id for line in bulk_lines[:60]
    ]
    dead = [r for r in got if isinstance(r, Unreadable)]
    assert [(r.reasons, r.record["_line"]) for r in dead] == [([WORKER_DIED], 31)]
    again = list(decode_in_workers(bulk_lines[:60], die_on_marker, batch_size=10))
    assert [r.external_id for r in again] == [
        map_bulk_customer_line(line).external_id for line in bulk_lines[:60]
    ]
