"""Generate and mutate a realistic Shopify + Klaviyo sandbox store (docs/reference.md section 5).

The store feeds the sandbox API server, the pipeline tests and the benchmarks, so it must be
large (a million customers in minutes), deterministic for a seed, and dirty in the ways real
stores are: emails that differ only in case or whitespace, national-format and invalid phones,
duplicate Klaviyo profiles, orders of deleted customers, over-refunds, future timestamps and a
few structurally invalid records. `_truth/persons.jsonl` records which records belong to the same
person so identity resolution can be scored.

Customers are produced in fixed-size chunks; every chunk has its own random stream derived from
(seed, chunk index) and its own range of person numbers, so chunks are independent (they can run
in parallel) and the output does not depend on how they are scheduled. Ids, emails and phone
numbers are bijective functions of the person number, which makes them unique without any global
bookkeeping. All times are relative to the store's reference time (REFERENCE_TIME unless one is
given), never the wall clock.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from crm_pipeline.sandbox import pools
from crm_pipeline.sandbox.builders.base import (
    CHUNK_SIZE,
    CUSTOMER_ID_BASE,
    DAY,
    FILES,
    HISTORY,
    METRICS,
    ORDER_ID_BASE,
    REFERENCE_TIME,
    REFUND_ID_BASE,
    YEAR,
    ChunkOutput,
    ChunkPlan,
    MutationSummary,
    StoreSummary,
    _draw_age,
    _jsonl,
    cents,
    dumps,
    klaviyo_times,
    money,
    order_net_spent_cents,
    shopify_time,
)
from crm_pipeline.sandbox.builders.klaviyo import KlaviyoBuilder
from crm_pipeline.sandbox.builders.odds import (
    BUYER_SHARE,
    DELETED_SHARE,
    GUEST_SHARE,
    KLAVIYO_ONLY_SHARE,
    LAMBDA_SHAPE,
    LIFETIME_MEAN_YEARS,
    MUTATE_NAME,
    MUTATE_ORDER,
    MUTATE_PHONE,
    MUTATE_REFUND,
)

logger = logging.getLogger(__name__)

# The store's names, wherever they now live (tests and tools import them from here).
__all__ = [
    "FILES",
    "METRICS",
    "REFERENCE_TIME",
    "ChunkOutput",
    "ChunkPlan",
    "MutationSummary",
    "StoreSummary",
    "cents",
    "chunk_plan",
    "generate_chunk",
    "generate_store",
    "money",
    "mutate_store",
    "mutation_phone",
    "order_net_spent_cents",
    "rate_scale",
    "run_hour",
    "shopify_time",
]

# ----------------------------------------------------------------------------------------------
# chunk plan and calibration


def chunk_plan(customers: int) -> list[ChunkPlan]:
    """Split `customers` live customers into chunks with contiguous person numbers."""
    plans: list[ChunkPlan] = []
    base, remaining, index = 0, customers, 0
    while remaining > 0:
        n = min(CHUNK_SIZE, remaining)
        nd = int(n * DELETED_SHARE + 0.5)
        nk = int(n * KLAVIYO_ONLY_SHARE)
        ng = int(n * GUEST_SHARE)
        plans.append(ChunkPlan(index, n, nd, nk, ng, base))
        base += n + nd + nk + ng
        remaining -= n
        index += 1
    return plans


def rate_scale(orders_per_customer: float) -> float:
    """Scale of the Gamma purchase rate so customers average `orders_per_customer` orders.

    Estimated with a fixed-seed Monte Carlo, so it does not depend on the store's seed.
    """
    rng = np.random.default_rng(424242)
    m = 200_000
    age = _draw_age(rng, m) / YEAR
    span = np.minimum(rng.exponential(LIFETIME_MEAN_YEARS, m), age)
    unit = float((rng.gamma(LAMBDA_SHAPE, 1.0, m) * span).mean())
    repeats = max(orders_per_customer / BUYER_SHARE - 1.0, 0.0)
    return repeats / unit


# ----------------------------------------------------------------------------------------------
# per-chunk generation


class _Chunk(KlaviyoBuilder):
    """Generates one chunk: the builders' steps in order (persons, Shopify, Klaviyo, truth)."""

    def run(self) -> ChunkOutput:
        self.persons()
        self._bind_lists()
        self.shopify_attributes()
        self.orders()
        self.journeys()
        customers, deleted = self.customers_json()
        orders = self.orders_json()
        self.profiles()
        events = self.events()
        profiles = self.profiles_json()
        truth = self.truth()
        self.summary.persons = self.plan.shopify + self.plan.klaviyo_only
        return ChunkOutput(
            files={
                "customers": _jsonl(customers),
                "orders": _jsonl(orders),
                "deleted": _jsonl(deleted),
                "profiles": _jsonl(profiles),
                "events": _jsonl(events),
                "truth": _jsonl(truth),
            },
            summary=self.summary,
        )


def generate_chunk(plan: ChunkPlan, seed: int, lam_scale: float, opc: float) -> ChunkOutput:
    """Generate one chunk (top-level so worker processes can run it).

    The cyclic GC is paused: the chunk allocates millions of short-lived dicts that hold no
    cycles, and repeated full collections over them would otherwise dominate the run time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Chunk(plan, seed, lam_scale, opc).run()
    finally:
        if was_enabled:
            gc.enable()


def _metrics_json(ref: int) -> bytes:
    created = klaviyo_times([ref - HISTORY - 90 * DAY])[0]
    return _jsonl(
        [
            dumps(
                {
                    "type": "metric",
                    "id": mid,
                    "attributes": {
                        "name": name,
                        "created": created,
                        "updated": created,
                        "integration": {
                            "object": "integration",
                            "name": "Shopify"
                            if name
                            in ("Placed Order", "Viewed Product", "Added to Cart", "Active on Site")
                            else "Klaviyo",
                            "category": "eCommerce"
                            if name != "Opened Email" and name != "Clicked Email"
                            else "Internal",
                        },
                    },
                }
            )
            for mid, name in METRICS
        ]
    )


def _chunk_outputs(
    plans: list[ChunkPlan], seed: int, lam_scale: float, opc: float, workers: int
) -> Iterator[ChunkOutput]:
    if workers <= 1:
        for plan in plans:
            yield generate_chunk(plan, seed, lam_scale, opc)
        return
    import multiprocessing as mp

    ctx = mp.get_context("forkserver" if os.name != "nt" else "spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(_star_chunk, [(pl, seed, lam_scale, opc) for pl in plans])


def _star_chunk(args: tuple[ChunkPlan, int, float, float]) -> ChunkOutput:
    return generate_chunk(*args)


def run_hour() -> datetime:
    """The current UTC hour: the reference time of stores made for a run (CLI, demo), so their
    newest customers and orders are from today and "new this month" is not zero."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def generate_store(
    out: Path,
    customers: int,
    seed: int = 0,
    *,
    orders_per_customer: float = 3.0,
    progress: bool = False,
    workers: int | None = None,
    reference_time: datetime | None = None,
) -> StoreSummary:
    """Write a sandbox store with `customers` live Shopify customers to `out`.

    Same arguments give byte-identical files (store.json's generated_at is `reference_time`, the
    store's "now": REFERENCE_TIME unless given; the CLI and the demo pass the run's hour so
    the store reaches up to the day it is used); `workers` (default: up to 2 processes when
    there is more than one chunk) only changes speed, never output.
    """
    out = Path(out)
    for sub in ("shopify", "klaviyo", "_truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    moment = (reference_time or REFERENCE_TIME).astimezone(UTC)
    ref = int(moment.timestamp())
    plans = [replace(plan, ref=ref) for plan in chunk_plan(customers)]
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(plans) > 1 else 1
    lam_scale = rate_scale(orders_per_customer)
    summary = StoreSummary(seed=seed, reference_time=moment.isoformat())
    handles = {k: open(out / f"{v}.tmp", "wb") for k, v in FILES.items()}  # noqa: SIM115
    started = time.monotonic()
    try:
        for done, chunk in enumerate(
            _chunk_outputs(plans, seed, lam_scale, orders_per_customer, workers), start=1
        ):
            for key, data in chunk.files.items():
                handles[key].write(data)
            summary.add(chunk.summary)
            if progress:
                logger.info(
                    "sandbox store: chunk %d/%d, %d customers, %.1fs",
                    done,
                    len(plans),
                    summary.customers,
                    time.monotonic() - started,
                )
    finally:
        for h in handles.values():
            h.close()
    for rel in FILES.values():
        os.replace(out / f"{rel}.tmp", out / rel)
    (out / "klaviyo/metrics.jsonl").write_bytes(_metrics_json(ref))
    for rel in [*FILES.values(), "klaviyo/metrics.jsonl"]:
        summary.files[rel] = (out / rel).stat().st_size
    meta = {
        **asdict(summary),
        "generated_at": moment.isoformat(),
        "orders_per_customer": orders_per_customer,
        "generator": "crm_pipeline.sandbox.generate",
    }
    (out / "store.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2) + b"\n")
    return summary


# ----------------------------------------------------------------------------------------------
# mutation (for incremental-sync tests)


def _iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def _rewrite_jsonl(path: Path, changes: dict[Any, dict[str, Any]], key: Any) -> None:
    """Replace the records whose key is in `changes`, atomically (tmp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        for line in src:
            if not line.strip():
                continue
            rec = orjson.loads(line) if changes else None
            if rec is not None and key(rec) in changes:
                dst.write(orjson.dumps(changes[key(rec)]) + b"\n")
            else:
                dst.write(line if line.endswith(b"\n") else line + b"\n")
    os.replace(tmp, path)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def mutation_phone(customer_id: int) -> str:
    """A new E.164 number for a mutated customer, unique per customer id.

    The +4475 range is never used by the generator, so a changed phone cannot collide with
    another person's number.
    """
    return f"+4475{(customer_id - CUSTOMER_ID_BASE) % 100_000_000:08d}"


def mutate_store(
    store: Path, fraction: float, seed: int, now: datetime | None = None
) -> MutationSummary:
    """Change `fraction` of the live Shopify customers, some of their orders and their profiles.

    Customers get a new note and tags, some a new last name or phone; a share of them get their
    latest order fulfilled or partially refunded (total_spent follows). Their Klaviyo profiles
    (found through the truth file) get the same name/phone and `updated` bumped. Every changed
    record's updated_at/updated is `now`, so an incremental sync can pick exactly these up.
    """
    store = Path(store)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now_shop = shopify_time(now)
    now_klaviyo = klaviyo_times([int(now.timestamp())])[0]
    rng = np.random.default_rng([seed, 0x5EED])
    summary = MutationSummary(now=now)
    customers_path = store / FILES["customers"]
    ids = [rec["id"] for rec in _iter_jsonl(customers_path)]
    k = min(len(ids), int(round(fraction * len(ids))))
    if k == 0:
        return summary
    picked = sorted(int(ids[i]) for i in rng.choice(len(ids), size=k, replace=False))
    del ids
    picked_set = set(picked)
    # per customer decisions, drawn in a fixed order for determinism
    touch_order = dict(zip(picked, (rng.random(k) < MUTATE_ORDER).tolist(), strict=True))
    rename = dict(zip(picked, (rng.random(k) < MUTATE_NAME).tolist(), strict=True))
    rephone = dict(zip(picked, (rng.random(k) < MUTATE_PHONE).tolist(), strict=True))
    tag_pick = dict(zip(picked, rng.integers(0, len(pools.CUSTOMER_TAGS), k).tolist(), strict=True))
    note_pick = dict(
        zip(picked, rng.integers(0, len(pools.CUSTOMER_NOTES), k).tolist(), strict=True)
    )
    lastname_pick = dict(zip(picked, rng.integers(0, 10_000, k).tolist(), strict=True))

    # orders: the latest order of each customer chosen for an order change
    latest: dict[int, dict[str, Any]] = {}
    orders_path = store / FILES["orders"]
    for order in _iter_jsonl(orders_path):
        cid = (order.get("customer") or {}).get("id")
        if cid in picked_set and touch_order[cid]:
            prev = latest.get(cid)
            if prev is None or _parse_time(order["created_at"]) > _parse_time(prev["created_at"]):
                latest[cid] = order
    order_changes: dict[int, dict[str, Any]] = {}
    spent_delta: dict[int, int] = {}
    for cid, order in latest.items():
        before = order_net_spent_cents(order)
        refundable = (
            order["financial_status"] == "paid"
            and not order.get("cancelled_at")
            and cents(order["total_price"]) > 0
            and order.get("line_items")
        )
        if refundable and rng.random() < MUTATE_REFUND:
            li = order["line_items"][0]
            amount = min(cents(li["price"]), cents(order["total_price"]))
            order["refunds"] = [
                *order.get("refunds", []),
                {
                    "id": REFUND_ID_BASE + (order["id"] - ORDER_ID_BASE) * 4 + 1,
                    "order_id": order["id"],
                    "created_at": now_shop,
                    "transactions": [
                        {"amount": money(amount), "kind": "refund", "status": "success"}
                    ],
                    "refund_line_items": [{"line_item_id": li["id"], "quantity": 1}],
                },
            ]
            full = amount >= cents(order["total_price"])
            order["financial_status"] = "refunded" if full else "partially_refunded"
        else:
            order["fulfillment_status"] = "fulfilled"
        order["updated_at"] = now_shop
        spent_delta[cid] = order_net_spent_cents(order) - before
        order_changes[order["id"]] = order
    _rewrite_jsonl(orders_path, order_changes, key=lambda r: r.get("id"))
    summary.orders = sorted(order_changes)

    # customers
    customer_changes: dict[int, dict[str, Any]] = {}
    new_names: dict[int, str] = {}
    new_phones: dict[int, str] = {}
    locales = pools.locale_pools()
    for rec in _iter_jsonl(customers_path):
        cid = rec["id"]
        if cid not in picked_set:
            continue
        tags = [t for t in (rec.get("tags") or "").split(", ") if t]
        tag = pools.CUSTOMER_TAGS[tag_pick[cid]]
        tags = [t for t in tags if t != tag] if tag in tags else [*tags, tag]
        rec["tags"] = ", ".join(sorted(tags))
        rec["note"] = pools.CUSTOMER_NOTES[note_pick[cid]]
        if rename[cid]:
            lp = locales[lastname_pick[cid] % len(locales)]
            rec["last_name"] = lp.last[lastname_pick[cid] % len(lp.last)]
            new_names[cid] = rec["last_name"]
        if rephone[cid] and rec.get("email"):
            rec["phone"] = mutation_phone(cid)
            new_phones[cid] = rec["phone"]
            if rec.get("sms_marketing_consent") is None:
                rec["sms_marketing_consent"] = {
                    "state": "not_subscribed",
                    "opt_in_level": "single_opt_in",
                    "consent_updated_at": None,
                    "consent_collected_from": "SHOPIFY",
                }
        if cid in spent_delta:
            rec["total_spent"] = money(cents(rec["total_spent"]) + spent_delta[cid])
        rec["updated_at"] = now_shop
        customer_changes[cid] = rec
    _rewrite_jsonl(customers_path, customer_changes, key=lambda r: r.get("id"))
    summary.customers = sorted(customer_changes)

    # profiles of the same persons
    truth_path = store / FILES["truth"]
    person_of: dict[str, int] = {}
    for t in _iter_jsonl(truth_path):
        if t["source"] == "shopify" and int(t["external_id"]) in picked_set:
            person_of[t["person_id"]] = int(t["external_id"])
    profile_owner: dict[str, int] = {}
    for t in _iter_jsonl(truth_path):
        if t["source"] == "klaviyo" and t["person_id"] in person_of:
            profile_owner[t["external_id"]] = person_of[t["person_id"]]
    profile_changes: dict[str, dict[str, Any]] = {}
    for rec in _iter_jsonl(store / FILES["profiles"]):
        cid = profile_owner.get(rec["id"])
        if cid is None:
            continue
        attrs = rec["attributes"]
        if cid in new_names and attrs.get("last_name") is not None:
            attrs["last_name"] = new_names[cid]
        if cid in new_phones and attrs.get("phone_number"):
            attrs["phone_number"] = new_phones[cid]
        attrs["updated"] = now_klaviyo
        profile_changes[rec["id"]] = rec
    _rewrite_jsonl(store / FILES["profiles"], profile_changes, key=lambda r: r.get("id"))
    summary.profiles = sorted(profile_changes)
    return summary
