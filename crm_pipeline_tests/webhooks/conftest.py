"""Receiver fixtures: an in-process app on the session database, and a real uvicorn process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crm_pipeline_tests.webhooks.helpers import (
    ADMIN_SECRET,
    KLAVIYO_SECRET,
    SECRET_ENV,
    SHOPIFY_SECRET,
)
from webhook_receiver.main import create_app
from webhook_receiver.settings import WebhookSettings


def make_settings(dsn: str, **overrides: object) -> WebhookSettings:
    values: dict[str, object] = {
        "shopify_webhook_secret": SHOPIFY_SECRET,
        "klaviyo_webhook_secret": KLAVIYO_SECRET,
        "admin_webhook_secret": ADMIN_SECRET,
        "database_url": dsn,
        "rate_limit_per_source": "",
        "rate_limit_per_shop": "",
    }
    values.update(overrides)
    return WebhookSettings(**values)


@pytest.fixture
def client(database_url: str, clean_db: sa.Engine) -> Iterator[TestClient]:
    """The app in-process (lifespan running, so the group-commit writers are up)."""
    with TestClient(create_app(make_settings(database_url))) as test_client:
        yield test_client


def count_events(engine: sa.Engine, where: str = "true", **params: object) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(f"SELECT count(*) FROM webhook_events WHERE {where}"), params
        ).scalar_one()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ReceiverProcess:
    url: str
    process: subprocess.Popen


def start_receiver_process(dsn: str, workers: int = 1, **env: str) -> ReceiverProcess:
    """uvicorn serving the receiver factory in a child process; waits for /healthz."""
    port = free_port()
    child_env = {
        **os.environ,
        **SECRET_ENV,
        "CRM_DATABASE_URL": dsn,
        "CRM_WEBHOOK_RATE_LIMIT_SOURCE": "",
        "CRM_WEBHOOK_RATE_LIMIT_SHOP": "",
        **env,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "webhook_receiver.main:create_app_from_env",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=child_env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return ReceiverProcess(url, process)
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited with {process.returncode}")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("receiver did not become healthy")


@pytest.fixture
def receiver_process(database_url: str, clean_db: sa.Engine) -> Iterator[ReceiverProcess]:
    proc = start_receiver_process(database_url)
    try:
        yield proc
    finally:
        if proc.process.poll() is None:
            proc.process.terminate()
            try:
                proc.process.wait(10)
            except subprocess.TimeoutExpired:
                proc.process.kill()
