"""A small random (seeded) store written straight into the CRM tables for analytics tests."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

AS_OF = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

FIRST = ["Jon", "Anna", "Maria", "Liam", "Olivia", "Noah", "Emma", "Lucas", "Mia", "Ethan"]
LAST = ["Smith", "Johnson", "Garcia", "Brown", "Miller", "Davis", "Lopez", "Wilson", "Moore"]
VENDORS = ["Acme", "Bolt", "Crest", "Dune"]
TYPES = ["Shoes", "Shirts", "Hats", "Bags", None]
STATUSES = ["paid", "paid", "paid", "partially_refunded", "refunded", "pending", "authorized"]
ACTIVITIES = ["email_open", "email_open", "email_click", "product_view", "add_to_cart",
              "active_on_site", "page_view", "purchase"]  # fmt: skip


@dataclass
class Store:
    customer_ids: list[str]


def seed_store(engine: sa.Engine, customers: int = 80, seed: int = 7) -> Store:
    """Insert customers, orders, line items and activities around AS_OF (some after it)."""
    rng = random.Random(seed)
    cust_rows, order_rows, item_rows, act_rows, addr_rows, src_rows = [], [], [], [], [], []
    ids = []
    for n in range(customers):
        cid = str(uuid.UUID(int=rng.getrandbits(128)))
        ids.append(cid)
        first, last = rng.choice(FIRST), rng.choice(LAST)
        created = AS_OF - timedelta(days=rng.randint(1, 900))
        attrs: dict = {"plan": rng.choice(["gold", "silver"])}
        if rng.random() < 0.6:
            attrs["klaviyo"] = {
                "predictive_analytics": {
                    "churn_probability": round(rng.random(), 2),
                    "predicted_clv": round(rng.uniform(0, 500), 2),
                    "expected_date_of_next_order": (AS_OF + timedelta(days=rng.randint(1, 200)))
                    .date()
                    .isoformat(),
                }
            }
        cust_rows.append(
            {
                "id": cid,
                "email": f"{first}.{last}{n}@example.com".lower(),
                "phone": None,
                "phone_normalized": f"+1415555{n:04d}",
                "first_name": first,
                "last_name": last,
                "status": rng.choice(["active"] * 8 + ["inactive", "pending"]),
                "customer_type": rng.choice(["registered", "guest", "wholesale"]),
                "tags": rng.sample(["newsletter", "segment:wholesale-east", "promo", "b2b"], 2),
                "custom_attributes": json.dumps(attrs),
                "created_at": created,
            }
        )
        addr_rows.append(
            {
                "cid": cid,
                "ext": f"a{n}",
                "country": rng.choice(["US", "DE", "FR"]),
            }
        )
        src_rows.append({"cid": cid, "source": rng.choice(["shopify", "klaviyo"]), "ext": f"s{n}"})
        for k in range(rng.choice([0, 1, 1, 2, 3, 5, 8])):
            oid = str(uuid.UUID(int=rng.getrandbits(128)))
            placed = AS_OF - timedelta(days=rng.uniform(-20, 700))
            status = rng.choice(STATUSES)
            cancelled = None
            if rng.random() < 0.12:
                cancelled = placed + timedelta(days=rng.uniform(0, 40))
            price = round(rng.uniform(5, 400), 2)
            refunded = 0.0
            if status == "refunded":
                refunded = price
            elif status == "partially_refunded":
                refunded = round(price * rng.uniform(0.05, 0.9), 2)
            order_rows.append(
                {
                    "id": oid,
                    "cid": cid,
                    "ext": f"o{n}-{k}",
                    "created_at": placed,
                    "cancelled_at": cancelled,
                    "fs": status,
                    "price": price,
                    "refunded": refunded,
                }
            )
            for j in range(rng.randint(1, 3)):
                qty = rng.randint(1, 4)
                item_rows.append(
                    {
                        "oid": oid,
                        "ext": f"l{j}",
                        "vendor": rng.choice(VENDORS),
                        "ptype": rng.choice(TYPES),
                        "qty": qty,
                        "rqty": rng.choice([0, 0, 0, 1]) if qty > 1 else 0,
                        "price": round(price / 3, 2),
                    }
                )
        for k in range(rng.randint(0, 12)):
            kind = rng.choice(ACTIVITIES)
            props = {}
            if rng.random() < 0.1:
                kind, props = "other", {"metric": "Received Email"}
            act_rows.append(
                {
                    "cid": cid,
                    "type": kind,
                    "at": AS_OF - timedelta(days=rng.uniform(-10, 200)),
                    "ext": f"e{n}-{k}",
                    "props": json.dumps(props),
                }
            )
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customers (id, email, phone, phone_normalized, first_name, last_name,"
                " status, customer_type, tags, custom_attributes, created_at) VALUES (:id, :email,"
                " :phone, :phone_normalized, :first_name, :last_name, :status, :customer_type,"
                " :tags, CAST(:custom_attributes AS jsonb), :created_at)"
            ),
            cust_rows,
        )
        conn.execute(
            sa.text(
                "INSERT INTO customer_addresses (customer_id, source, external_id, is_default,"
                " country_code) VALUES (:cid, 'shopify', :ext, true, :country)"
            ),
            addr_rows,
        )
        conn.execute(
            sa.text(
                "INSERT INTO customer_sources (customer_id, source, external_id)"
                " VALUES (:cid, :source, :ext)"
            ),
            src_rows,
        )
        if order_rows:
            conn.execute(
                sa.text(
                    "INSERT INTO orders (id, customer_id, source, external_id, created_at,"
                    " cancelled_at, financial_status, total_price, total_refunded) VALUES (:id,"
                    " :cid, 'shopify', :ext, :created_at, :cancelled_at, :fs, :price, :refunded)"
                ),
                order_rows,
            )
            conn.execute(
                sa.text(
                    "INSERT INTO order_line_items (order_id, external_id, vendor, product_type,"
                    " quantity, refunded_quantity, price) VALUES (:oid, :ext, :vendor, :ptype,"
                    " :qty, :rqty, :price)"
                ),
                item_rows,
            )
        if act_rows:
            conn.execute(
                sa.text(
                    "INSERT INTO customer_activities (customer_id, activity_type, occurred_at,"
                    " source, external_id, properties) VALUES (:cid, :type, :at, 'klaviyo', :ext,"
                    " CAST(:props AS jsonb))"
                ),
                act_rows,
            )
    return Store(customer_ids=ids)
