"""A storm of shuffled, duplicated deliveries ends in the state of applying them in order once."""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from crm_pipeline.webhooks import RetryPolicy
from crm_pipeline.webhooks.queue import claim
from crm_pipeline_tests.webhooks.test_processing_support import (
    at,
    land,
    run,
    shopify_customer,
    statuses,
)

TAGS = ["gold", "silver", "bronze", "newsletter", "b2b"]


def storm(customers: int, per_customer: int, seed: int) -> list[dict[str, Any]]:
    """Deliveries (topic, payload, triggered_at, delivery id) for `customers` people."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for n in range(customers):
        ident = 1000 + n
        minutes = sorted(rng.sample(range(1, 10_000), per_customer - 1))
        out.append(
            {
                "topic": "customers/create",
                "t": at(0),
                "payload": shopify_customer(ident, at(0), tags="gold"),
            }
        )
        for m in minutes:
            t = at(m)
            kind = rng.choice(["update", "update_2025", "tags_added", "tags_removed", "consent"])
            if kind == "update":
                tags = rng.sample(TAGS, rng.randint(0, 3))
                payload = shopify_customer(
                    ident,
                    t,
                    first_name=f"F{m}",
                    tags=", ".join(tags),
                    email_marketing_consent={
                        "state": rng.choice(["subscribed", "unsubscribed"]),
                        "consent_updated_at": t.isoformat(),
                    },
                )
                out.append({"topic": "customers/update", "t": t, "payload": payload})
            elif kind == "update_2025":
                payload = shopify_customer(ident, t, last_name=f"L{m}")
                del payload["tags"]
                out.append({"topic": "customers/update", "t": t, "payload": payload})
            elif kind in ("tags_added", "tags_removed"):
                out.append(
                    {
                        "topic": f"customer.{kind}",
                        "t": t,
                        "payload": {
                            "customerId": f"gid://shopify/Customer/{ident}",
                            "tags": rng.sample(TAGS, rng.randint(1, 2)),
                            "occurredAt": t.isoformat(),
                        },
                    }
                )
            else:
                out.append(
                    {
                        "topic": "customers_email_marketing_consent/update",
                        "t": t,
                        "payload": {
                            "customer_id": ident,
                            "email_marketing_consent": {
                                "state": rng.choice(["subscribed", "not_subscribed"]),
                                "consent_updated_at": t.isoformat(),
                            },
                        },
                    }
                )
    for i, d in enumerate(out):
        d["delivery_id"] = f"storm-{seed}-{i}"
    return out


def expected_state(deliveries: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """Apply in triggered_at order, the straightforward way (independent of the processor)."""
    state: dict[str, dict[str, Any]] = {}
    for d in sorted(deliveries, key=lambda d: d["t"]):
        p = d["payload"]
        if d["topic"] in ("customers/create", "customers/update"):
            s = state.setdefault(str(p["id"]), {"tags": set(), "email": False})
            s["first"], s["last"] = p["first_name"], p["last_name"]
            if "tags" in p:
                s["tags"] = {t.strip() for t in p["tags"].split(",") if t.strip()}
            if "email_marketing_consent" in p:
                s["email"] = p["email_marketing_consent"]["state"] == "subscribed"
        elif d["topic"].startswith("customer.tags"):
            s = state[p["customerId"].rsplit("/", 1)[-1]]
            change = set(p["tags"])
            s["tags"] = s["tags"] | change if d["topic"].endswith("added") else s["tags"] - change
        else:
            s = state[str(p["customer_id"])]
            s["email"] = p["email_marketing_consent"]["state"] == "subscribed"
    return {k: (v["first"], v["last"], sorted(v["tags"]), v["email"]) for k, v in state.items()}


def actual_state(engine: sa.Engine) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT s.external_id, c.first_name, c.last_name, c.tags, "
                "c.accepts_email_marketing "
                "FROM customers c JOIN customer_sources s ON s.customer_id = c.id "
                "WHERE s.source = 'shopify'"
            )
        ).all()
    return {r[0]: (r[1], r[2], sorted(r[3]), r[4]) for r in rows}


def land_shuffled(engine: sa.Engine, deliveries: list[dict[str, Any]], seed: int) -> int:
    """Land every delivery plus 30% redeliveries, in shuffled order; returns the stored count."""
    rng = random.Random(seed)
    sends = deliveries + rng.sample(deliveries, int(len(deliveries) * 0.3))
    rng.shuffle(sends)
    stored = 0
    for d in sends:
        stored += (
            land(
                engine,
                "shopify",
                d["topic"],
                d["payload"],
                triggered_at=d["t"],
                delivery_id=d["delivery_id"],
            )
            is not None
        )
    return stored


def drain(engine: sa.Engine, **kwargs: Any) -> None:
    for _ in range(5):  # deliveries that raced ahead of their customer retry on the next run
        run(engine, **kwargs)
        if set(statuses(engine)) == {"done"}:
            return


def test_storm_converges_to_in_order_state(clean_db: sa.Engine) -> None:
    deliveries = storm(customers=50, per_customer=20, seed=7)
    assert land_shuffled(clean_db, deliveries, seed=8) == len(deliveries) == 1000
    drain(clean_db, batch_size=250)
    assert statuses(clean_db) == {"done": 1000}
    assert actual_state(clean_db) == expected_state(deliveries)
    # every delivery was applied (or found already superseded), none failed
    with clean_db.connect() as conn:
        outcomes = dict(
            conn.execute(sa.text("SELECT outcome, count(*) FROM webhook_events GROUP BY 1")).all()
        )
    assert set(outcomes) <= {"applied", "stale", "duplicate"}, outcomes


class Crash(RuntimeError):
    pass


def test_killed_midway_next_run_converges(clean_db: sa.Engine) -> None:
    deliveries = storm(customers=10, per_customer=20, seed=11)
    land_shuffled(clean_db, deliveries, seed=12)
    done = 0

    def crash_after(delivery: Any, status: str) -> None:
        nonlocal done
        done += 1
        if done == 57:
            raise Crash("killed")

    with pytest.raises(Crash):
        run(clean_db, batch_size=100, after_each=crash_after)
    assert statuses(clean_db).get("processing", 0) > 0  # the dead run's claims are left behind
    # a later run reclaims them once the lease has expired (lease 0 here)
    drain(clean_db, policy=RetryPolicy(base_delay=timedelta(0), lease_timeout=timedelta(0)))
    assert statuses(clean_db) == {"done": len(deliveries)}
    assert actual_state(clean_db) == expected_state(deliveries)


def test_concurrent_claimers_never_share_a_row(clean_db: sa.Engine) -> None:
    for i in range(400):
        land(clean_db, "shopify", "products/update", {"id": i}, triggered_at=at(i % 7))
    taken: dict[str, list[int]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def claimer(name: str) -> None:
        barrier.wait()
        while batch := claim(clean_db, token=name, limit=7):
            taken[name].extend(d.id for d in batch)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(taken["a"]) & set(taken["b"])
    assert len(taken["a"]) + len(taken["b"]) == 400
    assert taken["a"] and taken["b"]
