"""Two workers and a process_webhooks run side by side apply each delivery once, in order."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
from google.cloud import firestore

from crm_pipeline.webhooks.processor import process_pending
from crm_pipeline.webhooks.queue import Delivery
from crm_pipeline_tests.webhooks.test_processing_support import (
    FAST,
    at,
    customer_by_shopify_id,
    land,
    run,
    shopify_customer,
    statuses,
)
from crm_pipeline_tests.worker.support import running_worker, wait_for

CUSTOMERS = 8
NOTES_EACH = 15


def _landed_in_shuffled_order(engine: sa.Engine, ids: list[str], rng: random.Random) -> None:
    """Notes per customer at increasing staff times, one activity each, landed shuffled."""
    actions = []
    for number, cid in enumerate(ids):
        for step in range(NOTES_EACH):
            actions.append(
                {
                    "action": "customer.note",
                    "customer_id": cid,
                    "internal_notes": f"note {step}",
                    "occurred_at": at(10 + step).isoformat(),
                }
            )
            actions.append(
                {
                    "action": "activity.record",
                    "customer_id": cid,
                    "activity_type": "other",
                    "activity_id": f"call-{number}-{step}",
                    "occurred_at": at(10 + step).isoformat(),
                }
            )
    rng.shuffle(actions)
    for payload in actions:
        land(engine, "manual", str(payload["action"]), payload)


def test_two_workers_and_a_run_apply_each_delivery_once(
    clean_db: sa.Engine, database_url: str, firestore_client: firestore.Client
) -> None:
    engine = clean_db
    for n in range(CUSTOMERS):
        land(engine, "shopify", "customers/create", shopify_customer(n + 1, at(0)))
    run(engine)
    ids = [str(customer_by_shopify_id(engine, n + 1).id) for n in range(CUSTOMERS)]
    done: dict[str, list[int]] = {"run": [], "first": [], "second": []}  # who finished what
    lock = threading.Lock()

    def recorder(name: str) -> Callable[[Delivery, str], None]:
        def record(delivery: Delivery, status: str) -> None:
            if status == "done" and delivery.source == "manual":
                with lock:
                    done[name].append(delivery.id)

        return record

    def sensor_run() -> None:
        """process_webhooks' asset draining the same queue, run after run."""
        while lander.is_alive() or statuses(engine).get("pending"):
            report = process_pending(
                engine, run_id="sensor", batch_size=7, policy=FAST, after_each=recorder("run")
            )
            if not report.claimed:
                time.sleep(0.05)

    with (
        running_worker(
            engine, database_url, firestore_client, batch_size=5, after_each=recorder("first")
        ),
        running_worker(
            engine, database_url, firestore_client, batch_size=9, after_each=recorder("second")
        ),
    ):
        lander = threading.Thread(
            target=_landed_in_shuffled_order, args=(engine, ids, random.Random(14))
        )
        lander.start()
        runner = threading.Thread(target=sensor_run)
        runner.start()
        lander.join()
        runner.join(120)
        total = CUSTOMERS * NOTES_EACH * 2
        wait_for(lambda: statuses(engine).get("done", 0) == CUSTOMERS + total, seconds=120)

    with engine.connect() as conn:
        notes = dict(conn.execute(sa.text("SELECT id::text, internal_notes FROM customers")).all())
        activities = conn.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT external_id) FROM customer_activities "
                "WHERE source = 'manual' AND activity_type = 'other'"
            )
        ).one()
    finished = done["run"] + done["first"] + done["second"]
    # each delivery was finished (its effect committed with its done mark) by exactly one of them
    assert len(finished) == len(set(finished)) == total
    assert done["first"] and done["second"], done  # both workers took part
    # per customer, the newest staff action wins whatever order the deliveries were applied in
    assert {cid: notes[cid] for cid in ids} == dict.fromkeys(ids, f"note {NOTES_EACH - 1}")
    assert tuple(activities) == (CUSTOMERS * NOTES_EACH, CUSTOMERS * NOTES_EACH)
    assert statuses(engine) == {"done": CUSTOMERS + total}
