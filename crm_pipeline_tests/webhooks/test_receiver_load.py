"""A real uvicorn process under concurrent load: duplicate storms and SIGKILL mid-load."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import sqlalchemy as sa

from crm_pipeline_tests.webhooks.conftest import ReceiverProcess
from crm_pipeline_tests.webhooks.helpers import shopify_request


def _stored_ids(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT delivery_id FROM webhook_events")).scalars())


def test_storm_with_duplicates_stores_each_delivery_once(
    receiver_process: ReceiverProcess, clean_db: sa.Engine
) -> None:
    rng = random.Random(7)
    unique = [f"storm-{i}" for i in range(700)]
    deliveries = unique + [rng.choice(unique) for _ in range(300)]
    rng.shuffle(deliveries)

    async def send_all() -> list[int]:
        gate = asyncio.Semaphore(64)
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=receiver_process.url, limits=limits) as client:

            async def send(delivery_id: str) -> int:
                body, headers = shopify_request({"id": delivery_id}, webhook_id=delivery_id)
                async with gate:
                    answer = await client.post(
                        "/webhooks/shopify", content=body, headers=headers, timeout=30
                    )
                return answer.status_code

            return await asyncio.gather(*(send(d) for d in deliveries))

    statuses = asyncio.run(send_all())
    assert set(statuses) == {200}
    stored = _stored_ids(clean_db)
    assert len(stored) == len(set(stored)) == len(unique)
    assert set(stored) == set(unique)
    metrics = httpx.get(f"{receiver_process.url}/metrics").text
    assert 'webhook_duplicates_total{source="shopify"} 300.0' in metrics


def test_sigkill_mid_load_loses_no_acknowledged_delivery(
    receiver_process: ReceiverProcess, clean_db: sa.Engine
) -> None:
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    enough = threading.Event()

    def sender(worker: int) -> None:
        with httpx.Client(base_url=receiver_process.url, timeout=10) as client:
            for n in range(2000):
                if stop.is_set():
                    return
                delivery_id = f"kill-{worker}-{n}"
                body, headers = shopify_request({"id": n}, webhook_id=delivery_id)
                try:
                    answer = client.post("/webhooks/shopify", content=body, headers=headers)
                except httpx.HTTPError:
                    return  # the process is gone
                if answer.status_code == 200:
                    with lock:
                        acknowledged.append(delivery_id)
                        if len(acknowledged) >= 400:
                            enough.set()

    with ThreadPoolExecutor(16) as pool:
        for worker in range(16):
            pool.submit(sender, worker)
        assert enough.wait(60), "the receiver did not acknowledge enough deliveries"
        os.kill(receiver_process.process.pid, signal.SIGKILL)
        receiver_process.process.wait(10)
        stop.set()

    stored = set(_stored_ids(clean_db))
    missing = [d for d in acknowledged if d not in stored]
    assert not missing, f"{len(missing)} acknowledged deliveries lost, e.g. {missing[:5]}"
    assert len(acknowledged) >= 400
