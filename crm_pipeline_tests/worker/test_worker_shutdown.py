"""Stopping the worker: the current delivery finishes, the rest of its claims go back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.webhooks.processor import process_pending
from crm_pipeline_tests.webhooks.test_processing_support import (
    FAST,
    at,
    land,
    shopify_customer,
    statuses,
)
from crm_pipeline_tests.worker.support import wait_for


def test_a_stop_finishes_the_current_delivery_and_releases_the_rest(clean_db: sa.Engine) -> None:
    for n in range(6):
        land(clean_db, "shopify", "customers/create", shopify_customer(n + 1, at(n)))
    finished: list[str] = []
    report = process_pending(
        clean_db,
        run_id="stopping",
        policy=FAST,
        after_each=lambda _delivery, status: finished.append(status),
        stop=lambda: len(finished) >= 2,
    )
    assert (report.processed, report.released, report.claimed) == (2, 4, 2)
    with clean_db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT status, attempts, claimed_by FROM webhook_events ORDER BY id")
        ).all()
    # released deliveries are ready again with their attempt not counted
    assert [tuple(r) for r in rows] == [("done", 1, None)] * 2 + [("pending", 0, None)] * 4
    # and the next run takes them at once
    assert process_pending(clean_db, run_id="next", policy=FAST).processed == 4


def test_sigterm_stops_the_worker_command_cleanly(
    clean_db: sa.Engine, database_url: str, firestore_client: firestore.Client
) -> None:
    env = {
        **os.environ,
        "CRM_DATABASE_URL": database_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "crm_pipeline.cli", "worker", "--no-dagster-events"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("waiting for deliveries" in line for line in lines))
        for n in range(3):
            land(clean_db, "shopify", "customers/create", shopify_customer(n + 1, at(n)))
        wait_for(lambda: statuses(clean_db) == {"done": 3})  # woken by the landing
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    reader.join(10)
    output = "".join(lines)
    assert returncode == 0, output
    assert "SIGTERM, stopping" in output
    assert "deliveries" in output.split("stopped after")[-1]
    assert firestore_client.collection("customers").count().get()[0][0].value == 3
