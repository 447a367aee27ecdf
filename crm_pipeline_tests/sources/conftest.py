"""A tiny store in the docs/reference.md section 5 format and sandbox servers over it.

Written here rather than taken from the generator so these tests pin the format, not a
particular generator's output.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from crm_pipeline.sandbox.server import SandboxServer

BASE = datetime(2024, 1, 1, tzinfo=UTC)
N_CUSTOMERS = 40
DELETED = {1040}
METRICS = {
    "MtOpen": "Opened Email",
    "MtClick": "Clicked Email",
    "MtView": "Viewed Product",
    "MtOrder": "Placed Order",
}


def _ts(hours: float, offset_hours: int = 0) -> str:
    tz = UTC if offset_hours == 0 else None
    moment = BASE + timedelta(hours=hours)
    if tz is UTC:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    from datetime import timezone

    local = moment.astimezone(timezone(timedelta(hours=offset_hours)))
    return local.isoformat()


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def write_store(root: Path, seed: int = 7) -> dict[str, list[dict]]:
    """Write the tiny store under root; returns the rows written, by file."""
    rng = random.Random(seed)
    customers, orders, profiles, events = [], [], [], []
    order_id = 5000
    for i in range(N_CUSTOMERS):
        cid = 1001 + i
        updated = 24 * i + rng.random()
        address = {
            "id": 7001 + i,
            "customer_id": cid,
            "first_name": f"First{i}",
            "last_name": f"Last{i}",
            "address1": f"{i} Main St",
            "address2": None,
            "city": "Springfield",
            "province": "Oregon",
            "province_code": "OR",
            "country": "United States",
            "country_code": "US",
            "zip": "97477",
            "phone": None,
            "default": True,
        }
        customers.append(
            {
                "id": cid,
                "email": f"user{i}@example.com",
                "first_name": f"First{i}",
                "last_name": f"Last{i}",
                "phone": f"+1541555{i:04d}" if i % 3 else None,
                "state": "enabled" if i % 4 else "disabled",
                "tags": "vip, newsletter" if i % 5 == 0 else "",
                "note": None if i % 2 else f"note {i}",
                "verified_email": bool(i % 2),
                "tax_exempt": False,
                "email_marketing_consent": {
                    "state": "subscribed" if i % 2 else "not_subscribed",
                    "opt_in_level": "single_opt_in",
                    "consent_updated_at": _ts(updated - 1, -5),
                },
                "sms_marketing_consent": None
                if i % 3 == 0
                else {
                    "state": "not_subscribed",
                    "opt_in_level": "single_opt_in",
                    "consent_updated_at": None,
                    "consent_collected_from": "OTHER",
                },
                "addresses": [address],
                "default_address": address,
                "created_at": _ts(updated - 100, -5),
                "updated_at": _ts(updated, -5 if i % 2 else 0),
                "orders_count": 0,
                "total_spent": "0.00",
                "currency": "USD",
            }
        )
        for k in range(i % 3):
            order_id += 1
            n_items = 1 + (order_id % 4)
            if order_id % 17 == 0:
                n_items = 60  # more than one page of line items in paginated pulls
            items = [
                {
                    "id": order_id * 100 + j,
                    "product_id": 300 + j,
                    "title": f"Product {j}",
                    "vendor": "Acme",
                    "product_type": "Shoes" if j % 2 else "Shirts",
                    "quantity": 1 + j % 2,
                    "price": f"{10 + j}.50",
                }
                for j in range(n_items)
            ]
            total = sum((10 + j + 0.5) * (1 + j % 2) for j in range(n_items))
            refunds = []
            if order_id % 5 == 0:
                refunds.append(
                    {
                        "id": order_id * 10,
                        "created_at": _ts(updated + k + 1),
                        "transactions": [{"amount": "10.50", "kind": "refund"}],
                        "refund_line_items": [{"line_item_id": order_id * 100, "quantity": 1}],
                    }
                )
            orders.append(
                {
                    "id": order_id,
                    "customer": {"id": cid},
                    "email": f"user{i}@example.com",
                    "created_at": _ts(updated + k),
                    "updated_at": _ts(updated + k + 2),
                    "cancelled_at": _ts(updated + k + 3) if order_id % 11 == 0 else None,
                    "financial_status": "partially_refunded" if refunds else "paid",
                    "fulfillment_status": "fulfilled" if order_id % 2 else None,
                    "total_price": f"{total:.2f}",
                    "currency": "USD",
                    "line_items": items,
                    "refunds": refunds,
                }
            )
        pid = f"01PROFILE{i:04d}"
        profiles.append(
            {
                "type": "profile",
                "id": pid,
                "attributes": {
                    "email": f"user{i}@example.com",
                    "phone_number": None,
                    "external_id": str(cid),
                    "first_name": f"First{i}",
                    "last_name": f"Last{i}",
                    "location": {"city": "Springfield", "country": "United States"},
                    "properties": {"source": "test"},
                    "created": _ts(updated - 50),
                    "updated": _ts(updated),
                    "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}},
                    "predictive_analytics": {"churn_probability": 0.1 * (i % 10)},
                },
            }
        )
        for k in range(3):
            metric = list(METRICS)[(i + k) % len(METRICS)]
            events.append(
                {
                    "type": "event",
                    "id": f"EV{i:04d}{k}",
                    "attributes": {
                        "datetime": _ts(updated + k),
                        "event_properties": {"k": k},
                    },
                    "relationships": {
                        "profile": {"data": {"type": "profile", "id": pid}},
                        "metric": {"data": {"type": "metric", "id": metric}},
                    },
                }
            )
    metrics = [
        {"type": "metric", "id": mid, "attributes": {"name": name}} for mid, name in METRICS.items()
    ]
    deleted = [{"id": d, "deleted_at": _ts(2000)} for d in DELETED]
    _write(root / "shopify" / "customers.jsonl", customers)
    _write(root / "shopify" / "orders.jsonl", orders)
    _write(root / "shopify" / "deleted_customers.jsonl", deleted)
    _write(root / "klaviyo" / "profiles.jsonl", profiles)
    _write(root / "klaviyo" / "metrics.jsonl", metrics)
    _write(root / "klaviyo" / "events.jsonl", events)
    return {
        "customers": [c for c in customers if c["id"] not in DELETED],
        "orders": orders,
        "profiles": profiles,
        "metrics": metrics,
        "events": events,
    }


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[dict]]]:
    root = tmp_path_factory.mktemp("store")
    return root, write_store(root)


@pytest.fixture
def sandbox(tiny_store: tuple[Path, dict]) -> Iterator[SandboxServer]:
    with SandboxServer(tiny_store[0], bulk_seconds=0.05) as server:
        yield server
