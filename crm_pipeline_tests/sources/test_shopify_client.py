"""ShopifyClient through the real SDK against the sandbox over a tiny store."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson
import pytest

from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline.sources.errors import AuthError, BulkOperationFailed
from crm_pipeline.sources.shopify import ShopifyClient
from crm_pipeline_tests.sources.helpers import FAST_POLICY, assert_matches


def _client(server: SandboxServer, **kwargs) -> ShopifyClient:
    return ShopifyClient(None, "shpat_test", api_url=server.url, retry_policy=FAST_POLICY, **kwargs)


def _by_id(rows: list[dict]) -> dict[int, dict]:
    return {r["id"]: r for r in rows}


def test_bulk_customers_round_trip(sandbox: SandboxServer, tiny_store) -> None:
    _, rows = tiny_store
    pulled = list(_client(sandbox).bulk_customers())
    assert len(pulled) == len(rows["customers"])  # the deleted customer is absent
    got = _by_id(pulled)
    for expected in rows["customers"]:
        assert_matches(expected, got[expected["id"]], f"customer {expected['id']}")


def test_bulk_orders_round_trip_with_children(sandbox: SandboxServer, tiny_store) -> None:
    _, rows = tiny_store
    pulled = list(_client(sandbox).bulk_orders())
    got = _by_id(pulled)
    assert got.keys() == {o["id"] for o in rows["orders"]}
    for expected in rows["orders"]:
        assert_matches(expected, got[expected["id"]], f"order {expected['id']}")
    assert any(o["refunds"] for o in pulled)
    assert max(len(o["line_items"]) for o in pulled) == 60


def test_bulk_result_is_real_jsonl_with_parent_ids(sandbox: SandboxServer) -> None:
    client = _client(sandbox)
    lines = []
    query = """{ orders { edges { node {
      id refunds { id } lineItems { edges { node { id } } }
    } } } }"""
    op = client._start_bulk(query)
    final = client._wait_bulk(op["id"])
    assert final["status"] == "COMPLETED"
    for raw in client._stream_lines(final["url"]):
        lines.append(orjson.loads(raw))
    roots = [x for x in lines if "__parentId" not in x]
    children = [x for x in lines if "__parentId" in x]
    assert int(final["rootObjectCount"]) == len(roots)
    assert int(final["objectCount"]) == len(lines)
    assert children and all(c["id"].startswith("gid://shopify/LineItem/") for c in children)
    assert all(isinstance(r["refunds"], list) for r in roots)
    # only what was selected comes back, as from Shopify
    assert {key for r in roots for key in r} == {"id", "refunds"}
    assert {key for r in roots for refund in r["refunds"] for key in refund} == {"id"}


def test_incremental_is_inclusive_and_crosses_pages(sandbox: SandboxServer, tiny_store) -> None:
    _, rows = tiny_store
    customers = sorted(rows["customers"], key=lambda c: datetime.fromisoformat(c["updated_at"]))
    since = datetime.fromisoformat(customers[20]["updated_at"])
    before = sandbox.state.counters.get("shopify_requests", 0)
    pulled = list(_client(sandbox, page_size=4).customers_updated_since(since))
    # Shopify's updated_at:> is inclusive: the record at `since` comes back too
    assert [c["id"] for c in pulled] == [c["id"] for c in customers[20:]]
    assert sandbox.state.counters["shopify_requests"] - before >= 5

    orders = list(_client(sandbox, orders_page_size=3).orders_updated_since(since))
    expected = {o["id"] for o in rows["orders"] if datetime.fromisoformat(o["updated_at"]) >= since}
    assert {o["id"] for o in orders} == expected
    for order in orders:
        source = next(o for o in rows["orders"] if o["id"] == order["id"])
        assert_matches(source, order)  # incl. the order with 60 line items (> 1 page)


def test_faults_throttling_and_429s_still_return_everything(tiny_store) -> None:
    root, rows = tiny_store
    with SandboxServer(
        root, fault_rate=0.2, rate_limit_429=0.1, seed=11, bulk_seconds=0.05
    ) as server:
        client = _client(server, page_size=5, orders_page_size=4, line_items_page_size=20)
        assert {c["id"] for c in client.bulk_customers()} == {c["id"] for c in rows["customers"]}
        assert {o["id"] for o in client.bulk_orders()} == {o["id"] for o in rows["orders"]}
        epoch = datetime.fromisoformat("2000-01-01T00:00:00+00:00")
        incremental = [c["id"] for c in client.customers_updated_since(epoch)]
        assert sorted(incremental) == sorted(c["id"] for c in rows["customers"])
        orders = [o["id"] for o in client.orders_updated_since(epoch)]
        assert sorted(orders) == sorted(o["id"] for o in rows["orders"])
        counters = server.state.counters
        assert counters.get("injected_5xx", 0) > 0
        assert counters.get("injected_429", 0) > 0


def test_cost_throttling_waits_for_the_bucket(sandbox: SandboxServer, tiny_store) -> None:
    _, rows = tiny_store
    sandbox.state.bucket = 0  # an empty cost bucket: the first call is THROTTLED
    before = sandbox.state.counters.get("shopify_throttled", 0)
    epoch = datetime.fromisoformat("2000-01-01T00:00:00+00:00")
    pulled = list(_client(sandbox, page_size=10).customers_updated_since(epoch))
    assert len(pulled) == len(rows["customers"])
    assert sandbox.state.counters["shopify_throttled"] > before


def test_failed_bulk_operation_raises(tiny_store) -> None:
    root, _ = tiny_store
    with SandboxServer(root, bulk_fail_rate=1.0, bulk_seconds=0.05) as server:
        with pytest.raises(BulkOperationFailed) as info:
            list(_client(server).bulk_customers())
        assert info.value.bulk_status == "FAILED"
        assert info.value.error_code == "INTERNAL_SERVER_ERROR"


def test_missing_token_is_an_auth_error(sandbox: SandboxServer) -> None:
    client = ShopifyClient(None, "", api_url=sandbox.url, retry_policy=FAST_POLICY)
    with pytest.raises(AuthError):
        list(client.customers_updated_since(datetime.fromisoformat("2024-01-01T00:00:00+00:00")))


def test_register_webhooks_is_idempotent(sandbox: SandboxServer) -> None:
    client = _client(sandbox)
    address = "https://crm.example.com/webhooks/shopify"
    topics = ["customers/create", "customers/update", "ORDERS_CREATE"]
    first = client.register_webhooks(address, topics)
    assert first["created"] == ["CUSTOMERS_CREATE", "CUSTOMERS_UPDATE", "ORDERS_CREATE"]
    second = client.register_webhooks(address, topics + ["customers/delete"])
    assert second["created"] == ["CUSTOMERS_DELETE"]
    assert second["kept"] == ["CUSTOMERS_CREATE", "CUSTOMERS_UPDATE", "ORDERS_CREATE"]
    assert len(second["subscriptions"]) == 4


def test_store_path_fixture_is_contract_shaped(tiny_store) -> None:
    root, _ = tiny_store
    for name in ("shopify/customers.jsonl", "shopify/orders.jsonl", "klaviyo/profiles.jsonl"):
        assert (Path(root) / name).exists()


class _BreakingFileServer:
    """Serves one JSONL body; the first response is cut off mid-line after `cut` bytes (the
    connection closes short of its Content-Length), later ones honour Range or not."""

    def __init__(self, body: bytes, cut: int, honour_range: bool) -> None:
        import http.server
        import threading

        self.requests: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                first = not outer.requests
                outer.requests.append(self.headers.get("Range"))
                start = 0
                if self.headers.get("Range") and honour_range:
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:cut] if first else body[start:])

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/result.jsonl"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.mark.parametrize("honour_range", [True, False])
def test_bulk_download_resumes_after_a_broken_stream_without_losing_or_repeating_lines(
    honour_range: bool,
) -> None:
    lines = [orjson.dumps({"id": i, "pad": "x" * (i % 97)}) for i in range(5000)]
    body = b"\n".join(lines)  # Shopify's last line has no newline either
    server = _BreakingFileServer(body, cut=len(body) // 2 + 7, honour_range=honour_range)
    try:
        client = ShopifyClient(None, "shpat_test", api_url=server.url, retry_policy=FAST_POLICY)
        got = list(client._stream_lines(server.url))
    finally:
        server.httpd.shutdown()
    assert got == lines
    assert len(server.requests) == 2 and server.requests[0] is None
    assert server.requests[1].startswith("bytes=")


@pytest.mark.parametrize("kind", ["customers", "orders"])
def test_bulk_results_rendered_by_processes_equal_the_sequential_ones(
    tiny_store, monkeypatch, kind: str
) -> None:
    """Big results are rendered in slices by processes (sandbox/shopify/bulk.py): same lines,
    same order, same counts as one thread renders them."""
    from crm_pipeline.sandbox.shopify import bulk

    query = "{ customers { edges { node { id } } } }".replace("customers", kind)

    def pull() -> tuple[list[bytes], dict]:
        with SandboxServer(tiny_store[0], bulk_seconds=0.05) as server:
            client = _client(server)
            final = client._wait_bulk(client._start_bulk(query)["id"])
            return list(client._stream_lines(final["url"])), final

    sequential, seq_final = pull()
    monkeypatch.setattr(bulk, "_PARALLEL_RENDER_MIN", 2)
    parallel, par_final = pull()
    assert len(sequential) > 10
    assert parallel == sequential
    assert par_final["objectCount"] == seq_final["objectCount"] == str(len(parallel))
    assert par_final["rootObjectCount"] == seq_final["rootObjectCount"]


def test_bulk_orders_look_up_refund_line_items_of_big_refunds(tmp_path) -> None:
    """Shopify's bulk queries cannot select refund line items (a connection inside the
    `refunds` list); the client looks them up after the file, a refund of more than one page
    (50) alone with the larger page."""
    items = [
        {"id": 900 + j, "product_id": 1, "title": "T", "quantity": 2, "price": "1.00"}
        for j in range(70)
    ]
    refunds = [
        {
            "id": 77,
            "created_at": "2024-02-01T00:00:00Z",
            "transactions": [{"amount": "70.00", "kind": "refund"}],
            "refund_line_items": [{"line_item_id": 900 + j, "quantity": 1} for j in range(70)],
        },
        {
            "id": 78,
            "created_at": "2024-02-02T00:00:00Z",
            "transactions": [{"amount": "1.00", "kind": "refund"}],
            "refund_line_items": [{"line_item_id": 969, "quantity": 1}],
        },
    ]
    orders = [
        {
            "id": 10 + k,
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": f"2024-01-0{k + 1}T00:00:00Z",
            "total_price": "140.00",
            "currency": "USD",
            "line_items": items if k == 1 else items[:1],
            "refunds": refunds if k == 1 else [],
        }
        for k in range(3)
    ]
    shop = tmp_path / "shopify"
    shop.mkdir()
    (shop / "orders.jsonl").write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in orders))
    with SandboxServer(tmp_path, bulk_seconds=0.05) as server:
        pulled = {o["id"]: o for o in _client(server).bulk_orders()}
    assert pulled.keys() == {10, 11, 12}
    assert_matches(orders[1]["refunds"], pulled[11]["refunds"])
    assert [len(r["refund_line_items"]) for r in pulled[11]["refunds"]] == [70, 1]
    assert pulled[10]["refunds"] == pulled[12]["refunds"] == []
