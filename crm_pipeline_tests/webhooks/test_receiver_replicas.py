"""Two receiver processes behind one "load balancer" agree (issue 16, item 4): the rate limits
are shared through PostgreSQL, and a delivery sent to both replicas is stored once.

The other half of the item, two `crm-pipeline worker` processes applying deliveries in
per-customer order, belongs with the worker command and its tests.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from crm_pipeline_tests.webhooks.conftest import (
    ReceiverProcess,
    count_events,
    start_receiver_process,
)
from crm_pipeline_tests.webhooks.helpers import klaviyo_request, shopify_request

SHOP_BUDGET = 40
SOURCE_BUDGET = 25


@pytest.fixture
def two_receivers(
    request: pytest.FixtureRequest, database_url: str, clean_db: sa.Engine
) -> Iterator[list[ReceiverProcess]]:
    """Two receiver processes on one database; the per-source budget only where asked for."""
    env = {"CRM_WEBHOOK_RATE_LIMIT_SHOP": f"{SHOP_BUDGET}/minute"}
    if getattr(request, "param", None) == "source":
        env["CRM_WEBHOOK_RATE_LIMIT_SOURCE"] = f"{SOURCE_BUDGET}/minute"
    replicas: list[ReceiverProcess] = []
    try:
        for _ in range(2):
            replicas.append(start_receiver_process(database_url, **env))
        yield replicas
    finally:
        for replica in replicas:
            replica.process.terminate()
        for replica in replicas:
            try:
                replica.process.wait(10)
            except subprocess.TimeoutExpired:
                replica.process.kill()


def _post_all(
    replicas: list[ReceiverProcess], route: str, requests: list[tuple[bytes, dict[str, str]]]
) -> list[httpx.Response]:
    """Send request i to replica i % 2, eight at a time, as a round-robin balancer would."""
    clients = [httpx.Client(base_url=r.url, timeout=10) for r in replicas]

    def send(index: int) -> httpx.Response:
        body, headers = requests[index]
        return clients[index % len(clients)].post(route, content=body, headers=headers)

    try:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(send, range(len(requests))))
    finally:
        for client in clients:
            client.close()


def test_shop_budget_holds_across_replicas(
    two_receivers: list[ReceiverProcess], clean_db: sa.Engine
) -> None:
    shop = "busy-shop.myshopify.com"
    requests = [shopify_request({"id": i}, shop=shop) for i in range(SHOP_BUDGET * 2 + 10)]
    answers = _post_all(two_receivers, "/webhooks/shopify", requests)

    codes = [a.status_code for a in answers]
    assert codes.count(200) == SHOP_BUDGET  # per-process counters would let 2x through
    assert codes.count(429) == len(requests) - SHOP_BUDGET
    refused = [a for a in answers if a.status_code == 429]
    assert all(1 <= int(a.headers["Retry-After"]) <= 60 for a in refused)
    # Both replicas both accepted and refused: the budget really was shared, not split.
    for parity in (0, 1):
        mine = codes[parity::2]
        assert 200 in mine and 429 in mine
    assert count_events(clean_db, "shop_domain = :shop", shop=shop) == SHOP_BUDGET

    # Another shop has its own window, on either replica.
    for replica in two_receivers:
        body, headers = shopify_request({"id": 1}, shop="quiet-shop.myshopify.com")
        answer = httpx.post(f"{replica.url}/webhooks/shopify", content=body, headers=headers)
        assert answer.status_code == 200


@pytest.mark.parametrize("two_receivers", ["source"], indirect=True)
def test_source_budget_holds_across_replicas(
    two_receivers: list[ReceiverProcess], clean_db: sa.Engine
) -> None:
    requests = [klaviyo_request({"data": []}) for _ in range(SOURCE_BUDGET + 15)]
    codes = [a.status_code for a in _post_all(two_receivers, "/webhooks/klaviyo", requests)]
    assert codes.count(200) == SOURCE_BUDGET
    assert codes.count(429) == 15


def test_a_delivery_sent_to_both_replicas_is_stored_once(
    two_receivers: list[ReceiverProcess], clean_db: sa.Engine
) -> None:
    # Every delivery twice, its copies on different replicas at nearly the same moment
    # (a sender's retry after a timeout lands on the other replica).
    requests = []
    for i in range(SHOP_BUDGET // 2):
        request = shopify_request({"id": i}, webhook_id=f"twice-{i}")
        requests += [request, request]
    answers = _post_all(two_receivers, "/webhooks/shopify", requests)

    assert all(a.status_code == 200 for a in answers)
    statuses = [a.json()["status"] for a in answers]
    assert statuses.count("accepted") == SHOP_BUDGET // 2
    assert statuses.count("duplicate") == SHOP_BUDGET // 2
    assert count_events(clean_db) == SHOP_BUDGET // 2
    with clean_db.connect() as conn:
        ids = conn.execute(sa.text("SELECT delivery_id FROM webhook_events")).scalars().all()
    assert sorted(ids) == sorted(f"twice-{i}" for i in range(SHOP_BUDGET // 2))
