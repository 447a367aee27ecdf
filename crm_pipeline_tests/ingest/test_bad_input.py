"""One bad record never aborts a pull or an import: it becomes a quarantine row, the rest loads.

Bad kinds: a JSON line that is not an object, a line that is not JSON, NUL characters (which
PostgreSQL refuses in text and jsonb), bytes that are not UTF-8, and a record that kills the
worker process decoding it.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
import sqlalchemy as sa

from crm_pipeline.ingest.bad_records import (
    INVALID_UTF8,
    NOT_JSON,
    NOT_OBJECT,
    NUL_CHARACTER,
    WORKER_DIED,
    mapped,
)
from crm_pipeline.ingest.customers import CustomerLoader
from crm_pipeline.ingest.files import import_file
from crm_pipeline.ingest.workers import decode_in_workers
from crm_pipeline.mapping.klaviyo import map_profile
from crm_pipeline.sandbox.shopify.nodes import customer_node
from crm_pipeline.sources.klaviyo import KlaviyoClient
from crm_pipeline_tests.ingest.test_workers import die_on_marker


def quarantined(engine: sa.Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT origin, source, external_id, record, reasons FROM quarantined_records "
                "ORDER BY id"
            )
        ).all()


def source_ids(engine: sa.Engine, source: str) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.text("SELECT external_id FROM customer_sources WHERE source = :s"),
                {"s": source},
            ).scalars()
        )


def shopify_customer(n: int, **changes: object) -> dict:
    """A Shopify customer in REST shape (as a store file holds it)."""
    customer = {
        "id": 9000 + n,
        "email": f"person{n}@example.com",
        "first_name": f"First{n}",
        "last_name": f"Last{n}",
        "phone": None,
        "state": "enabled",
        "tags": "",
        "addresses": [],
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-02-01T00:00:00Z",
    }
    customer.update(changes)
    return customer


def bulk_line(customer: dict) -> bytes:
    return orjson.dumps(customer_node(customer))


# ---------------------------------------------------------------- Shopify bulk pull


def test_shopify_bulk_pull_quarantines_each_bad_line_and_loads_the_rest(clean_db) -> None:
    good = [bulk_line(shopify_customer(n)) for n in range(40)]
    nul = bulk_line(shopify_customer(50, first_name="Ro\x00se"))
    not_utf8 = bulk_line(shopify_customer(51, last_name="Zz")).replace(b'"Zz"', b'"Z\xff\xfez"')
    lines = [
        *good[:10],
        b"[1, 2, 3]",  # valid JSON, not an object
        *good[10:20],
        nul,
        *good[20:25],
        not_utf8,
        b'{"id": "gid://shopify/Customer/77", "email": ',  # cut short: not JSON
        *good[25:30],
        b"die",  # kills the worker that decodes it
        *good[30:],
    ]
    records = decode_in_workers(lines, die_on_marker, source="shopify", batch_size=8)
    loader = CustomerLoader(
        clean_db, origin="api pull", origin_detail="shopify.customers", reconcile_run_id="r1"
    )
    report = loader.load(records, chunk_size=16)

    assert report.received == len(lines) and report.accounted == len(lines)
    assert report.inserted == len(good) and report.quarantined_records == 5
    assert source_ids(clean_db, "shopify") == {str(9000 + n) for n in range(40)}
    rows = quarantined(clean_db)
    assert {r.origin for r in rows} == {"api pull"} and {r.source for r in rows} == {"shopify"}
    by_reason = {r.reasons[0]: r for r in rows}
    assert set(by_reason) == {NOT_OBJECT, NUL_CHARACTER, INVALID_UTF8, NOT_JSON, WORKER_DIED}
    assert by_reason[NOT_OBJECT].record["_line"] == 11
    assert by_reason[NUL_CHARACTER].external_id == "9050"
    assert by_reason[NUL_CHARACTER].record["first_name"] == "Ro\\u0000se"  # kept, escaped
    assert base64.b64decode(by_reason[INVALID_UTF8].record["_raw_base64"]) == not_utf8
    assert by_reason[WORKER_DIED].record["_raw"] == "die"
    assert by_reason[WORKER_DIED].record["_line"] == lines.index(b"die") + 1
    with clean_db.connect() as conn:  # seen by the pull: a full reconcile must not delete it
        seen = set(conn.execute(sa.text("SELECT external_id FROM reconcile_seen")).scalars())
    assert "9050" in seen


def test_a_bad_line_decoded_in_process_is_quarantined_too(clean_db, monkeypatch) -> None:
    import crm_pipeline.ingest.workers as workers

    monkeypatch.setattr(workers, "worker_count", lambda: 1)
    lines = [bulk_line(shopify_customer(1)), b'"just a string"', bulk_line(shopify_customer(2))]
    out = list(decode_in_workers(lines, die_on_marker, source="shopify"))
    assert [getattr(r, "reasons", None) for r in out] == [None, [NOT_OBJECT], None]


# ---------------------------------------------------------------- Klaviyo page


def profile(n: int, **attributes: object) -> dict:
    attrs = {
        "email": f"kl{n}@example.com",
        "first_name": f"K{n}",
        "updated": "2024-03-01T00:00:00+00:00",
        "created": "2024-01-01T00:00:00+00:00",
    }
    attrs.update(attributes)
    return {"type": "profile", "id": f"01KLAV{n:04d}", "attributes": attrs}


class _OnePage(BaseHTTPRequestHandler):
    body = b""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.api+json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture
def klaviyo_page() -> Iterator[tuple[type[_OnePage], str]]:
    handler = type("Page", (_OnePage,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_klaviyo_page_quarantines_each_bad_profile_and_loads_the_rest(
    clean_db, klaviyo_page
) -> None:
    handler, url = klaviyo_page
    good = [orjson.dumps(profile(n)) for n in range(5)]
    items = [
        good[0],
        orjson.dumps(profile(10, first_name="Nu\x00ll")),
        good[1],
        orjson.dumps(profile(11, last_name="QQ")).replace(b'"QQ"', b'"Q\xc3(Q"'),  # not UTF-8
        good[2],
        b'"not an object"',
        good[3],
        b"42",
        good[4],
    ]
    handler.body = b'{"data": [' + b",".join(items) + b'], "links": {"next": null}}'
    client = KlaviyoClient("pk_test", api_url=url, timeout=5)
    report = CustomerLoader(clean_db, origin="api pull", origin_detail="klaviyo.profiles").load(
        mapped(client.profiles(), map_profile, "klaviyo")
    )

    assert report.received == len(items) == report.accounted
    assert report.inserted == 5 and report.quarantined_records == 4
    assert source_ids(clean_db, "klaviyo") == {f"01KLAV{n:04d}" for n in range(5)}
    rows = quarantined(clean_db)
    assert sorted(r.reasons[0] for r in rows) == sorted(
        [NUL_CHARACTER, INVALID_UTF8, NOT_OBJECT, NOT_OBJECT]
    )
    by_id = {r.external_id: r for r in rows}
    assert by_id["01KLAV0010"].record["attributes"]["first_name"] == "Nu\\u0000ll"
    assert by_id["01KLAV0011"].record["attributes"]["last_name"] == "Q\\udcc3(Q"
    assert [r.record["_value"] for r in rows if r.external_id is None] == ["not an object", 42]


# ---------------------------------------------------------------- import file


def test_import_jsonl_quarantines_each_bad_line_and_loads_the_rest(clean_db, tmp_path) -> None:
    lines = [
        b'{"email": "a@example.com", "first_name": "A"}',
        b'["a", "list"]',
        b'{"email": "b@example.com", "first_name": "B\\u0000"}',
        b'{"email": "c@example.com", "first_name": "\xff\xfeC"}',
        b"not json at all",
        b'{"email": "d@example.com", "tags": {"not": "a list"}, "addresses": "nowhere"}',
        b'{"email": "e@example.com", "first_name": "E"}',
    ]
    path = tmp_path / "people.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = import_file(clean_db, path).report

    assert report.received == len(lines) == report.accounted
    assert report.inserted + report.quarantined_records == len(lines)
    assert {"jsonl:email:a@example.com", "jsonl:email:e@example.com"} <= source_ids(
        clean_db, "manual"
    )
    rows = quarantined(clean_db)
    assert {r.origin for r in rows} == {"import file"}
    reasons = {r.reasons[0] for r in rows}
    assert {NOT_OBJECT, NUL_CHARACTER, INVALID_UTF8, NOT_JSON} <= reasons
    assert len(rows) == report.quarantined_records


def test_import_csv_quarantines_rows_with_nul_or_invalid_utf8(clean_db, tmp_path) -> None:
    path = tmp_path / "customers_export.csv"
    path.write_bytes(
        b"Customer ID,First Name,Last Name,Email\n"
        b"'1,Ann,Lee,ann@example.com\n"
        b"'2,Bad\x00Nul,Lee,nul@example.com\n"
        b"'3,Bad\xffByte,Lee,byte@example.com\n"
        b"'4,Too,Many,cells@example.com,extra,cells\n"
        b"'5,Eve,Lee,eve@example.com\n"
    )
    report = import_file(clean_db, path).report

    assert report.received == 5 == report.accounted
    assert source_ids(clean_db, "manual") >= {"shopify_csv:1", "shopify_csv:5"}
    reasons = sorted(r.reasons[0] for r in quarantined(clean_db))
    assert reasons == sorted([NUL_CHARACTER, INVALID_UTF8])
    assert report.quarantined_records == 2


def test_shopify_bulk_orders_quarantine_a_bad_line_and_load_the_rest(clean_db) -> None:
    from crm_pipeline.ingest.orders import OrderLoader
    from crm_pipeline.mapping.shopify import map_order
    from crm_pipeline.sandbox.shopify.bulk import _record_lines, plan_bulk_query
    from crm_pipeline.sources.shopify import BULK_ORDERS, DEFAULT_API_VERSION, ShopifyClient

    plan = plan_bulk_query(DEFAULT_API_VERSION, BULK_ORDERS.replace("{filter}", ""))

    def order(n: int, **changes: object) -> dict:
        rec = {
            "id": 5000 + n,
            "customer": {"id": 9000 + n},
            "email": f"person{n}@example.com",
            "created_at": "2025-01-15T00:00:00Z",
            "updated_at": "2025-02-01T00:00:00Z",
            "financial_status": "paid",
            "total_price": "10.00",
            "currency": "USD",
            "line_items": [
                {"id": 70 + n, "product_id": 1, "title": "Tee", "quantity": 1, "price": "10.00"}
            ],  # fmt: skip
            "refunds": [],
        }
        rec.update(changes)
        return rec

    lines = [line for n in range(3) for _, line in _record_lines(plan, order(n))]
    lines[2:2] = [b"\xff not json", b"[]"]
    lines += [line for _, line in _record_lines(plan, order(9, currency="U\x00SD"))]
    client = ShopifyClient("shop.example", "token", api_url="http://127.0.0.1:9")
    client._bulk_lines = lambda template, since: iter(lines)  # the result file, as downloaded
    report = OrderLoader(clean_db, origin="api pull").load(
        mapped(client.bulk_orders(), map_order, "shopify")
    )
    assert report.quarantined_records == 3 and report.accounted == report.received == 6
    with clean_db.connect() as conn:
        loaded = set(conn.execute(sa.text("SELECT external_id FROM orders")).scalars())
    assert loaded == {"5000", "5001", "5002"}
    assert sorted(r.reasons[0] for r in quarantined(clean_db)) == sorted(
        [INVALID_UTF8, NOT_OBJECT, NUL_CHARACTER]
    )
