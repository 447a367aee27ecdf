"""Durability under database trouble: 503 fast while PostgreSQL is down, 200 once it is back."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from crm_pipeline.db.migrate import migrate
from crm_pipeline.db.server import EmbeddedPostgres
from crm_pipeline_tests.webhooks.conftest import make_settings
from crm_pipeline_tests.webhooks.helpers import shopify_request
from webhook_receiver.main import create_app

SHOPIFY_TIMEOUT_SECONDS = 5.0


@pytest.fixture
def throwaway_postgres() -> Iterator[EmbeddedPostgres]:
    """A private server this test may stop, so the shared session server is never touched."""
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="crm-wh-pg-", dir="/tmp")))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


def _stored(dsn: str, delivery_id: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT 1 FROM webhook_events WHERE delivery_id = %s", (delivery_id,)
        ).fetchone()
    return row is not None


def test_database_down_is_503_fast_then_recovers(throwaway_postgres: EmbeddedPostgres) -> None:
    dsn = throwaway_postgres.create_database("crm_down")
    migrate(dsn)
    with TestClient(create_app(make_settings(dsn))) as client:
        body, headers = shopify_request({"id": 1}, webhook_id="before")
        assert client.post("/webhooks/shopify", content=body, headers=headers).status_code == 200

        throwaway_postgres.stop()
        for attempt in range(3):  # the first hits the dead connection, later ones reconnect
            body, headers = shopify_request({"id": 2}, webhook_id=f"during-{attempt}")
            started = time.monotonic()
            answer = client.post("/webhooks/shopify", content=body, headers=headers)
            elapsed = time.monotonic() - started
            assert answer.status_code == 503, answer.text
            assert elapsed < SHOPIFY_TIMEOUT_SECONDS / 2, elapsed
            time.sleep(0.3)
        assert client.get("/readyz").status_code == 503

        throwaway_postgres.start()
        body, headers = shopify_request({"id": 3}, webhook_id="after")
        deadline = time.monotonic() + 10
        while True:  # the writer pauses briefly between reconnect attempts
            answer = client.post("/webhooks/shopify", content=body, headers=headers)
            if answer.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert answer.status_code == 200, answer.text
        assert client.get("/readyz").status_code == 200
    assert _stored(dsn, "before") and _stored(dsn, "after")
    assert not _stored(dsn, "during-0")
