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
bookkeeping. All times are relative to REFERENCE_TIME, never the wall clock.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from crm_pipeline.sandbox import pools

logger = logging.getLogger(__name__)

REFERENCE_TIME = datetime(2026, 11, 1, tzinfo=UTC)
REF = int(REFERENCE_TIME.timestamp())
DAY = 86_400
YEAR = 365 * DAY
HISTORY = 3 * YEAR
CHUNK_SIZE = 50_000

CUSTOMER_ID_BASE = 7_100_000_000_000
ADDRESS_ID_BASE = 8_200_000_000_000
ORDER_ID_BASE = 5_200_000_000_000
LINE_ITEM_ID_BASE = 13_600_000_000_000
REFUND_ID_BASE = 9_300_000_000_000
MAX_ORDERS_PER_PERSON = 300

# Shares of the person population per chunk of live customers.
DELETED_SHARE = 0.005
KLAVIYO_ONLY_SHARE = 0.25
GUEST_SHARE = 0.06
BUYER_SHARE = 0.78
# Pareto/NBD-style purchase process: Gamma purchase rates, exponential lifetimes.
LAMBDA_SHAPE = 0.8
LIFETIME_MEAN_YEARS = 2.5

METRICS: tuple[tuple[str, str], ...] = (
    ("Y6Hmxn", "Opened Email"),
    ("Tq7Jzb", "Clicked Email"),
    ("Rk3VwA", "Viewed Product"),
    ("Ma9PcL", "Added to Cart"),
    ("Hs2XfD", "Active on Site"),
    ("Wd5NqE", "Placed Order"),
)
M_OPEN, M_CLICK, M_VIEW, M_CART, M_ACTIVE, M_ORDER = range(6)

CROCKFORD = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BASE62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
INVALID_EMAILS = ("not-an-email", "{local}@", "@{domain}", "{local} at {domain}")
INVALID_PHONES = ("12345", "n/a", "0000000000", "N/A", "call me", "+1 555")
COMPANIES = ("Acme Corp", "Northwind Traders", "Globex", "Initech", "Umbrella Ltd", "Stark & Co")
CUSTOMER_STATES = ("enabled", "disabled", "invited", "declined")
EMAIL_CONSENT = ("subscribed", "not_subscribed", "unsubscribed", "pending")
SOURCE_NAMES = ("web", "web", "web", "shopify_draft_order", "pos", "iphone")


@dataclass
class StoreSummary:
    """Counts of everything a generated store holds (also written to store.json)."""

    seed: int
    reference_time: str
    customers: int = 0
    deleted_customers: int = 0
    orders: int = 0
    guest_orders: int = 0
    line_items: int = 0
    refunds: int = 0
    profiles: int = 0
    klaviyo_only_profiles: int = 0
    duplicate_profiles: int = 0
    metrics: int = len(METRICS)
    events: int = 0
    persons: int = 0
    invalid_customers: int = 0
    invalid_orders: int = 0
    files: dict[str, int] = field(default_factory=dict)

    def add(self, other: StoreSummary) -> None:
        for name in (
            "customers",
            "deleted_customers",
            "orders",
            "guest_orders",
            "line_items",
            "refunds",
            "profiles",
            "klaviyo_only_profiles",
            "duplicate_profiles",
            "events",
            "persons",
            "invalid_customers",
            "invalid_orders",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class MutationSummary:
    """The records a mutate_store call changed, per stream, so tests can check incrementals."""

    now: datetime
    customers: list[int] = field(default_factory=list)
    orders: list[int] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# small formatting helpers


def money(cents: int) -> str:
    """Shopify money string ("12.50") from integer cents; cents keep totals exact."""
    if cents < 0:
        return "-" + money(-cents)
    return f"{cents // 100}.{cents % 100:02d}"


def cents(amount: str | float | int | None) -> int:
    """Integer cents from a Shopify money string."""
    if amount is None:
        return 0
    return int(round(float(amount) * 100))


def _shop_offsets(ts: np.ndarray) -> np.ndarray:
    # The shop sits in New York; an April–October DST approximation keeps offsets realistic
    # while local time and offset stay consistent, so the instant is exact.
    month = ts.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) % 12 + 1
    return np.where((month >= 4) & (month <= 10), -4 * 3600, -5 * 3600)


def shopify_times(ts: np.ndarray | list[int]) -> list[str]:
    """ISO-8601 with the shop's UTC offset, as Shopify's REST API returns them."""
    ts = np.asarray(ts, dtype=np.int64)
    off = _shop_offsets(ts)
    local = np.datetime_as_string((ts + off).astype("datetime64[s]"), unit="s").tolist()
    return [
        s + ("-04:00" if o == -14400 else "-05:00")
        for s, o in zip(local, off.tolist(), strict=True)
    ]


def shopify_time(dt: datetime) -> str:
    """One Shopify timestamp for a datetime (used by mutate_store)."""
    return shopify_times([int(dt.timestamp())])[0]


def klaviyo_times(ts: np.ndarray | list[int]) -> list[str]:
    """ISO-8601 in UTC, the way Klaviyo's JSON:API renders datetimes."""
    ts = np.asarray(ts, dtype=np.int64)
    return [s + "+00:00" for s in np.datetime_as_string(ts.astype("datetime64[s]")).tolist()]


def _encode(value_cols: list[tuple[np.ndarray, int]], alphabet: bytes) -> list[str]:
    """Fixed-width base-N strings for columns of unsigned ints, concatenated per row."""
    base = len(alphabet)
    alpha = np.frombuffer(alphabet, dtype=np.uint8)
    width = sum(w for _, w in value_cols)
    n = len(value_cols[0][0])
    out = np.empty((n, width), dtype=np.uint8)
    pos = width
    for values, w in reversed(value_cols):
        v = values.astype(np.uint64).copy()
        for k in range(pos - 1, pos - w - 1, -1):
            out[:, k] = alpha[(v % np.uint64(base)).astype(np.intp)]
            v //= np.uint64(base)
        pos -= w
    return out.view(f"S{width}").ravel().astype(f"U{width}").tolist()


def _scramble(x: np.ndarray, bits: int, mult: int, add: int) -> np.ndarray:
    # Odd multiplier + add modulo 2**bits is a bijection: unique inputs give unique outputs.
    mask = np.uint64((1 << bits) - 1)
    with np.errstate(over="ignore"):
        return (x.astype(np.uint64) * np.uint64(mult) + np.uint64(add)) & mask


def person_id(pidx: int) -> str:
    """Ground-truth person key."""
    return f"P{pidx:09d}"


def order_net_spent_cents(order: dict[str, Any]) -> int:
    """What an order adds to the customer's total_spent: captured money minus refunds.

    Pending, voided and cancelled orders add nothing; an order never subtracts (over-refunds and
    negative totals are clipped to zero). The generator and mutate_store both use this rule, and
    tests use it to check total_spent against the orders file.
    """
    if order.get("cancelled_at") or order.get("financial_status") not in (
        "paid",
        "partially_refunded",
        "refunded",
    ):
        return 0
    refunded = sum(
        cents(t.get("amount"))
        for r in order.get("refunds") or ()
        for t in r.get("transactions") or ()
        if t.get("kind") == "refund"
    )
    return max(0, cents(order.get("total_price")) - refunded)


# ----------------------------------------------------------------------------------------------
# chunk plan and calibration


@dataclass(frozen=True)
class ChunkPlan:
    """Person-number ranges of one chunk: live, deleted, Klaviyo-only and guest persons."""

    index: int
    live: int
    deleted: int
    klaviyo_only: int
    guests: int
    base: int

    @property
    def shopify(self) -> int:
        return self.live + self.deleted


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


def _draw_age(rng: np.random.Generator, n: int) -> np.ndarray:
    # Skewed towards recent sign-ups, as in a growing shop.
    return np.maximum(HISTORY * rng.beta(1.1, 1.6, n), 3600.0)


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


@dataclass
class ChunkOutput:
    """Serialised JSONL bytes of one chunk for every file, plus its counts."""

    files: dict[str, bytes]
    summary: StoreSummary


FILES = {
    "customers": "shopify/customers.jsonl",
    "orders": "shopify/orders.jsonl",
    "deleted": "shopify/deleted_customers.jsonl",
    "profiles": "klaviyo/profiles.jsonl",
    "events": "klaviyo/events.jsonl",
    "truth": "_truth/persons.jsonl",
}


dumps = orjson.dumps


def _jsonl(lines: list[bytes]) -> bytes:
    """Join serialised records; records are dumped as they are built to keep chunks small."""
    if not lines:
        return b""
    return b"\n".join(lines) + b"\n"


def _email_variant(email: str, kind: int) -> str:
    """0 = as is, 1 = other casing, 2 = surrounding whitespace (dirt across sources)."""
    if kind == 1:
        local, _, domain = email.partition("@")
        return local[:1].upper() + local[1:] + "@" + domain.upper()
    if kind == 2:
        return " " + email + " "
    return email


class _Chunk:
    """Generates one chunk; methods share the chunk's arrays and random stream."""

    def __init__(self, plan: ChunkPlan, seed: int, lam_scale: float, opc: float) -> None:
        self.plan = plan
        self.rng = np.random.default_rng([seed, plan.index])
        self.lam_scale = lam_scale
        self.opc = opc
        self.locales = pools.locale_pools()
        self.catalog = pools.product_catalog()
        self.summary = StoreSummary(seed=seed, reference_time=REFERENCE_TIME.isoformat())

    # persons --------------------------------------------------------------------------------

    def persons(self) -> None:
        """Identity attributes of Shopify persons (live + deleted) and Klaviyo-only persons."""
        p, rng = self.plan, self.rng
        n = p.shopify + p.klaviyo_only
        self.n_persons = n
        self.pidx = np.arange(p.base, p.base + n, dtype=np.int64)
        weights = np.array([c.weight for c in pools.COUNTRIES])
        self.country = rng.choice(len(weights), size=n, p=weights / weights.sum())
        name_loc = np.where(rng.random(n) < 0.85, self.country, rng.integers(0, len(weights), n))
        self.name_loc = name_loc
        flen = np.array([len(lp.first) for lp in self.locales])
        llen = np.array([len(lp.last) for lp in self.locales])
        self.first_i = (rng.random(n) * flen[name_loc]).astype(np.int64)
        self.last_i = (rng.random(n) * llen[name_loc]).astype(np.int64)
        self.email_tpl = rng.integers(0, 5, n)
        self.email_dom = rng.integers(0, len(pools.EMAIL_DOMAINS), n)
        self.email_num = _scramble(self.pidx, 27, 7919, 13).astype(np.int64)
        suffix = ((self.pidx * 48271 + 12345) % 100_000_000).astype(np.int64)
        self.phone_suffix = suffix
        self.gb_landline = (rng.random(n) < 0.3) & (suffix < 20_000_000)
        self.created = (REF - _draw_age(rng, n)).astype(np.int64)

    def name(self, i: int) -> tuple[str, str]:
        lp = self.locales[self._name_loc[i]]
        return lp.first[self._first_i[i]], lp.last[self._last_i[i]]

    def email(self, i: int) -> str:
        lp = self.locales[self._name_loc[i]]
        f, la = lp.first_ascii[self._first_i[i]], lp.last_ascii[self._last_i[i]]
        num = self._email_num[i]
        tpl = self._email_tpl[i]
        if tpl == 0:
            local = f"{f}.{la}{num}"
        elif tpl == 1:
            local = f"{f[:1]}{la}{num}"
        elif tpl == 2:
            local = f"{la}.{f}_{num}"
        elif tpl == 3:
            local = f"{f}{num}"
        else:
            local = f"{f}_{la[:1]}{num}"
        return f"{local}@{pools.EMAIL_DOMAINS[self._email_dom[i]]}"

    def work_email(self, i: int) -> str:
        lp = self.locales[self._name_loc[i]]
        f, la = lp.first_ascii[self._first_i[i]], lp.last_ascii[self._last_i[i]]
        dom = pools.WORK_DOMAINS[self._email_dom[i] % len(pools.WORK_DOMAINS)]
        return f"{f}.{la}.{self._email_num[i]}@{dom}"

    def phone_e164(self, i: int) -> str:
        c = pools.COUNTRIES[self._country[i]]
        s = self._suffix[i]
        if c.code in ("US", "CA"):
            areas = pools.US_AREA_CODES if c.code == "US" else pools.CA_AREA_CODES
            return f"+1{areas[s // 8_000_000]}{2_000_000 + s % 8_000_000}"
        if c.code == "GB":
            if self._gb_landline[i]:
                return f"+4420{70_000_000 + s}"
            return f"+447{400_000_000 + s}"
        # 7 digits keep every number inside a valid mobile range; unique while the store has
        # fewer than 10M persons (the suffix is a bijection of the person number mod 10**7).
        return f"{c.phone_prefix}{self._suffix7[i]:07d}"

    def phone_national(self, i: int) -> str:
        e = self.phone_e164(i)
        if e.startswith("+1"):
            d = e[2:]
            return f"({d[:3]}) {d[3:6]}-{d[6:]}"
        if e.startswith("+4420"):
            d = e[5:]
            return f"020 {d[:4]} {d[4:]}"
        if e.startswith("+447"):
            d = e[3:]
            return f"0{d[:4]} {d[4:]}"
        return e

    def phone_international(self, i: int) -> str:
        e = self.phone_e164(i)
        if e.startswith("+1"):
            return f"+1 {e[2:5]}-{e[5:8]}-{e[8:]}"
        if e.startswith("+44"):
            return f"+44 {e[3:7]} {e[7:]}"
        return e

    # shopify customers and orders -----------------------------------------------------------

    def shopify_attributes(self) -> None:
        """Account-level attributes and the latent purchase process of Shopify persons."""
        p, rng = self.plan, self.rng
        s = p.shopify
        self.is_deleted = np.zeros(s, dtype=bool)
        self.is_deleted[p.live :] = True
        self.has_email = rng.random(s) >= 0.02
        self.invalid_email = self.has_email & (rng.random(s) < 0.002) & ~self.is_deleted
        # phone kinds: 0 none, 1 e164, 2 national, 3 international, 4 invalid
        self.phone_kind = rng.choice(5, size=s, p=[0.33, 0.50, 0.09, 0.04, 0.04])
        self.phone_kind[~self.has_email] = 1
        us_gb = np.isin(self.country[:s], [0, 1, 2])
        self.phone_kind[(self.phone_kind == 2) & ~us_gb] = 1
        self.phone_kind[(self.phone_kind == 3) & ~us_gb] = 1
        self.n_addr = rng.choice(4, size=s, p=[0.15, 0.6, 0.18, 0.07])
        # national numbers only parse with a region, which the default address provides
        self.phone_kind[(self.phone_kind == 2) & (self.n_addr == 0)] = 1
        self.customer_id = (CUSTOMER_ID_BASE + self.pidx[:s] * 37 + rng.integers(0, 37, s)).astype(
            np.int64
        )
        age_years = (REF - self.created[:s]) / YEAR
        buyer = rng.random(s) < BUYER_SHARE
        lam = rng.gamma(LAMBDA_SHAPE, self.lam_scale, s)
        lifetime = rng.exponential(LIFETIME_MEAN_YEARS, s)
        span = np.minimum(lifetime, age_years)
        repeats = rng.poisson(lam * span)
        self.n_orders = np.where(buyer, np.minimum(1 + repeats, MAX_ORDERS_PER_PERSON), 0)
        self.lam, self.lifetime, self.span = lam, lifetime, span

    def orders(self) -> None:
        """Order rows (customers' and guests'), line items and refunds, as flat arrays."""
        p, rng, cat = self.plan, self.rng, self.catalog
        s = p.shopify
        g_counts = np.where(rng.random(p.guests) < 0.1, 2, 1)
        counts = np.concatenate([self.n_orders, g_counts])
        owner = np.repeat(np.arange(s + p.guests), counts)
        n = len(owner)
        self.order_owner = owner
        cust_owner = owner < s
        first_of = np.zeros(n, dtype=bool)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        first_of[starts[counts > 0]] = True
        created_c = self.created[:s]
        span_s = (self.span * YEAR).astype(np.int64)
        t = np.empty(n, dtype=np.int64)
        o_c = np.where(cust_owner, owner, 0)
        base_t = created_c[o_c]
        first_t = base_t + rng.exponential(2 * DAY, n).astype(np.int64)
        rep_t = base_t + (rng.random(n) * span_s[o_c]).astype(np.int64)
        t[:] = np.where(first_of, first_t, rep_t)
        guest_t = REF - (rng.random(n) * HISTORY).astype(np.int64)
        t = np.where(cust_owner, t, guest_t)
        t = np.minimum(t, REF - 60)
        future = rng.random(n) < 0.0005
        t = np.where(future, REF + (rng.integers(1, 300, n) * DAY), t)
        order = np.lexsort((t, owner))
        t = t[order]
        future = future[order]
        self.order_time = t
        self.order_future = future
        j = np.arange(n) - np.repeat(starts, counts)
        guest_pidx = p.base + p.shopify + p.klaviyo_only + np.arange(p.guests)
        owner_pidx = np.concatenate([self.pidx[:s], guest_pidx])[owner]
        self.order_seq = owner_pidx * 1000 + j
        self.order_id = ORDER_ID_BASE + self.order_seq
        # line items
        n_items = rng.choice([1, 2, 3, 4], size=n, p=[0.55, 0.27, 0.12, 0.06])
        self.item_start = np.concatenate([[0], np.cumsum(n_items)[:-1]])
        self.n_items = n_items
        ni = int(n_items.sum())
        pop = 1.0 / (np.arange(len(cat)) + 5.0)
        self.item_product = rng.choice(len(cat), size=ni, p=pop / pop.sum())
        self.item_qty = rng.choice([1, 2, 3], size=ni, p=[0.8, 0.15, 0.05])
        prices = np.array([pr.price_cents for pr in cat], dtype=np.int64)
        line_total = prices[self.item_product] * self.item_qty
        total = np.add.reduceat(line_total, self.item_start) if n else np.zeros(0, np.int64)
        # statuses: 0 paid, 1 refunded, 2 partially_refunded, 3 pending, 4 voided
        u = rng.random(n)
        fs = np.select([u < 0.04, u < 0.09, u < 0.12, u < 0.15], [1, 2, 3, 4], 0)
        recent = t > REF - 3 * DAY
        fs = np.where(recent & (rng.random(n) < 0.5) & (fs == 0), 3, fs)
        fs = np.where(future & (fs != 0), 0, fs)
        cancelled = (fs == 4) | ((fs == 1) & (rng.random(n) < 0.4))
        refund_t = np.minimum(t + rng.integers(2 * DAY, 30 * DAY, n), REF - 30)
        refund_t = np.maximum(refund_t, t + 60)
        first_price = prices[self.item_product[self.item_start]] if n else total
        refund_amt = np.where(fs == 1, total, np.where(fs == 2, first_price, 0))
        fs = np.where((fs == 2) & (refund_amt >= total), 1, fs)
        over = (fs == 1) & (rng.random(n) < 0.03)
        refund_amt = np.where(over, total * 3 // 2 + 500, refund_amt)
        negative = rng.random(n) < 0.001
        total = np.where(negative, -total, total)
        self.invalid_orders = int(negative.sum())
        # fulfillment: 0 none, 1 fulfilled, 2 partial
        fu = rng.random(n)
        ff = np.where(fu < 0.93, 1, np.where(fu < 0.96, 2, 0))
        ff = np.where((fs == 3) | (fs == 4) | recent | future, 0, ff)
        ff = np.where((fs == 1) & (rng.random(n) < 0.5), 0, ff)
        updated = t + rng.integers(0, 5 * DAY, n)
        has_refund = (fs == 1) | (fs == 2)
        updated = np.where(has_refund, np.maximum(updated, refund_t), updated)
        updated = np.where(future, t + 3600, np.minimum(updated, REF - 1))
        updated = np.maximum(updated, t)
        self.order_total = total
        self.order_fs = fs
        self.order_ff = ff
        self.order_cancelled = cancelled
        self.order_refund_t = refund_t
        self.order_refund_amt = refund_amt
        self.order_has_refund = has_refund
        self.order_updated = updated
        self.order_email_kind = rng.choice(4, size=n, p=[0.88, 0.06, 0.02, 0.04])
        self.order_source = rng.integers(0, len(pools_source_names()), n)
        net = np.where(
            cancelled | (fs >= 3),
            0,
            np.maximum(
                0, np.abs(total) * np.where(negative, -1, 1) - np.where(has_refund, refund_amt, 0)
            ),
        )
        self.order_net = net
        cust_mask = cust_owner
        self.spent = np.bincount(owner[cust_mask], weights=net[cust_mask], minlength=s).astype(
            np.int64
        )
        self.last_order_updated = np.full(s, 0, dtype=np.int64)
        valid_t = cust_mask & ~future
        np.maximum.at(self.last_order_updated, owner[valid_t], updated[valid_t])
        self.first_order_t = np.full(s, -1, dtype=np.int64)
        self.last_order_t = np.full(s, -1, dtype=np.int64)
        self.last_order_id = np.full(s, -1, dtype=np.int64)
        if n:
            is_last = np.ones(n, dtype=bool)
            is_last[:-1] = owner[1:] != owner[:-1]
            is_first = np.ones(n, dtype=bool)
            is_first[1:] = owner[1:] != owner[:-1]
            lm = is_last & cust_mask
            fm = is_first & cust_mask
            self.last_order_t[owner[lm]] = t[lm]
            self.last_order_id[owner[lm]] = self.order_id[lm]
            self.first_order_t[owner[fm]] = t[fm]
        self.summary.orders = n
        self.summary.guest_orders = int((~cust_mask).sum())
        self.summary.line_items = ni
        self.summary.refunds = int(has_refund.sum())
        self.summary.invalid_orders = self.invalid_orders

    def _address_rows(self) -> None:
        rng, s = self.rng, self.plan.shopify
        na = int(self.n_addr.sum())
        self.addr_start = np.concatenate([[0], np.cumsum(self.n_addr)[:-1]])
        owner = np.repeat(np.arange(s), self.n_addr)
        same_country = rng.random(na) < 0.92
        country = np.where(same_country, self.country[:s][owner], self.country[:s][owner])
        clen = np.array([len(c.cities) for c in pools.COUNTRIES])
        self.addr_country = country.tolist()
        self.addr_city = (rng.random(na) * clen[country]).astype(np.int64).tolist()
        self.addr_street = rng.integers(0, pools.STREETS_PER_LOCALE, na).tolist()
        self.addr_zip = rng.integers(0, pools.STREETS_PER_LOCALE, na).tolist()
        self.addr_line2 = rng.choice(6, size=na, p=[0.85, 0.05, 0.04, 0.03, 0.02, 0.01]).tolist()
        self.addr_line2_n = rng.integers(1, 40, na).tolist()
        self.addr_company = np.where(rng.random(na) < 0.08, rng.integers(0, 6, na), -1).tolist()
        self.addr_other_name = (rng.random(na) < 0.1).tolist()
        self.addr_other_first = rng.integers(0, 10_000, na).tolist()
        self.addr_with_phone = (rng.random(na) < 0.6).tolist()

    def customers_json(self) -> tuple[list[bytes], list[bytes]]:
        """Live customer records and deleted-customer stubs."""
        p, rng, s = self.plan, self.rng, self.plan.shopify
        self._address_rows()
        tags_n = rng.choice(4, size=s, p=[0.55, 0.28, 0.12, 0.05]).tolist()
        tag_pick = rng.integers(0, len(pools.CUSTOMER_TAGS), (s, 3)).tolist()
        note_pick = np.where(rng.random(s) < 0.07, rng.integers(0, 8, s), -1).tolist()
        state = rng.choice(4, size=s, p=[0.70, 0.25, 0.04, 0.01]).tolist()
        verified = (rng.random(s) < 0.9).tolist()
        tax_exempt = (rng.random(s) < 0.01).tolist()
        ec_state = rng.choice(4, size=s, p=[0.42, 0.43, 0.12, 0.03])
        self.ec_state = ec_state
        ec_level = (rng.random(s) < 0.3).tolist()
        created = self.created[:s]
        consent_t = created + (rng.random(s) * (REF - created)).astype(np.int64)
        sms_state = rng.choice(4, size=s, p=[0.25, 0.6, 0.1, 0.05]).tolist()
        sms_from = (rng.random(s) < 0.8).tolist()
        invalid_tpl = rng.integers(0, len(INVALID_EMAILS), s).tolist()
        invalid_phone = rng.integers(0, len(INVALID_PHONES), s).tolist()
        upd = np.maximum(created, self.last_order_updated)
        upd = np.where(ec_state != 1, np.maximum(upd, consent_t), upd)
        upd = np.minimum(np.maximum(upd, created + rng.integers(0, 30 * DAY, s)), REF - 1)
        future = rng.random(s) < 0.001
        upd = np.where(future, REF + rng.integers(1, 365, s) * DAY, upd)
        created_s = shopify_times(created)
        updated_s = shopify_times(upd)
        consent_s = shopify_times(consent_t)
        deleted_at = np.minimum(upd + rng.integers(DAY, 200 * DAY, s), REF - 1)
        deleted_s = shopify_times(deleted_at)
        cities = [c.cities for c in pools.COUNTRIES]
        countries = pools.COUNTRIES
        self._bind_lists()
        ids = self.customer_id.tolist()
        n_orders = self.n_orders.tolist()
        spent = self.spent.tolist()
        last_oid = self.last_order_id.tolist()
        has_email = self.has_email.tolist()
        invalid_email = self.invalid_email.tolist()
        phone_kind = self.phone_kind.tolist()
        n_addr = self.n_addr.tolist()
        addr_start = self.addr_start.tolist()
        ec_state_l = ec_state.tolist()
        customers: list[bytes] = []
        deleted: list[bytes] = []
        self.shopify_email: list[str | None] = [None] * s
        self.shopify_phone: list[str | None] = [None] * s
        for i in range(s):
            cid = ids[i]
            first, last = self.name(i)
            email = self.email(i) if has_email[i] else None
            self.shopify_email[i] = email
            if invalid_email[i]:
                local, _, domain = (email or "x@y").partition("@")
                email = INVALID_EMAILS[invalid_tpl[i]].format(local=local, domain=domain)
            pk = phone_kind[i]
            if pk == 0:
                phone = None
            elif pk == 1:
                phone = self.phone_e164(i)
            elif pk == 2:
                phone = self.phone_national(i)
            elif pk == 3:
                phone = self.phone_international(i)
            else:
                phone = INVALID_PHONES[invalid_phone[i]]
            self.shopify_phone[i] = phone
            if i >= p.live:
                deleted.append(dumps({"id": cid, "deleted_at": deleted_s[i]}))
                continue
            addresses = []
            a0 = addr_start[i]
            for k in range(n_addr[i]):
                a = a0 + k
                ci = self.addr_country[a]
                country = countries[ci]
                city = cities[ci][self.addr_city[a]]
                lp = self.locales[ci]
                af, al = first, last
                if self.addr_other_name[a]:
                    af = lp.first[self.addr_other_first[a] % len(lp.first)]
                line2 = self.addr_line2[a]
                addresses.append(
                    {
                        "id": ADDRESS_ID_BASE + (self.pidx_l[i] * 4 + k) * 3,
                        "customer_id": cid,
                        "first_name": af,
                        "last_name": al,
                        "company": COMPANIES[self.addr_company[a]]
                        if self.addr_company[a] >= 0
                        else None,
                        "address1": lp.streets[self.addr_street[a]],
                        "address2": None
                        if line2 == 0
                        else f"{('Apt', 'Suite', 'Unit', 'Floor', 'Room')[line2 - 1]} "
                        f"{self.addr_line2_n[a]}",
                        "city": city.name,
                        "province": city.province,
                        "country": country.name,
                        "zip": lp.postcodes[self.addr_zip[a]],
                        "phone": phone if self.addr_with_phone[a] and pk in (1, 2, 3) else None,
                        "name": f"{af} {al}",
                        "province_code": city.province_code,
                        "country_code": country.code,
                        "country_name": country.name,
                        "default": k == 0,
                    }
                )
            tags = sorted({pools.CUSTOMER_TAGS[x] for x in tag_pick[i][: tags_n[i]]})
            es = ec_state_l[i]
            rec: dict[str, Any] = {
                "id": cid,
                "email": email,
                "created_at": created_s[i],
                "updated_at": updated_s[i],
                "first_name": first,
                "last_name": last,
                "orders_count": n_orders[i],
                "state": CUSTOMER_STATES[state[i]],
                "total_spent": money(spent[i]),
                "last_order_id": last_oid[i] if last_oid[i] >= 0 else None,
                "note": pools.CUSTOMER_NOTES[note_pick[i]] if note_pick[i] >= 0 else None,
                "verified_email": verified[i] and email is not None,
                "multipass_identifier": None,
                "tax_exempt": tax_exempt[i],
                "tags": ", ".join(tags),
                "currency": "USD",
                "phone": phone,
                "addresses": addresses,
                "tax_exemptions": [],
                "email_marketing_consent": None
                if email is None
                else {
                    "state": EMAIL_CONSENT[es],
                    "opt_in_level": "confirmed_opt_in"
                    if ec_level[i] and es == 0
                    else "single_opt_in",
                    "consent_updated_at": None if es == 1 else consent_s[i],
                },
                "sms_marketing_consent": None
                if phone is None
                else {
                    "state": EMAIL_CONSENT[sms_state[i]],
                    "opt_in_level": "single_opt_in",
                    "consent_updated_at": None if sms_state[i] == 1 else consent_s[i],
                    "consent_collected_from": "SHOPIFY" if sms_from[i] else "OTHER",
                },
                "admin_graphql_api_id": f"gid://shopify/Customer/{cid}",
            }
            if addresses:
                rec["default_address"] = addresses[0]
            customers.append(dumps(rec))
        self.summary.customers = p.live
        self.summary.deleted_customers = p.deleted
        self.summary.invalid_customers = int(self.invalid_email[: p.live].sum())
        return customers, deleted

    def _bind_lists(self) -> None:
        # Python lists index ~10x faster than numpy arrays inside per-record loops.
        self._name_loc = self.name_loc.tolist()
        self._first_i = self.first_i.tolist()
        self._last_i = self.last_i.tolist()
        self._email_tpl = self.email_tpl.tolist()
        self._email_dom = self.email_dom.tolist()
        self._email_num = self.email_num.tolist()
        self._country = self.country.tolist()
        self._suffix = self.phone_suffix.tolist()
        self._suffix7 = ((self.pidx * 7919 + 4321) % 10_000_000).tolist()
        self._gb_landline = self.gb_landline.tolist()
        self.pidx_l = self.pidx.tolist()

    def orders_json(self) -> list[bytes]:
        """Order records in Shopify REST shape."""
        p, s, cat = self.plan, self.plan.shopify, self.catalog
        n = len(self.order_owner)
        created_s = shopify_times(self.order_time)
        updated_s = shopify_times(self.order_updated)
        refund_s = shopify_times(self.order_refund_t)
        owner = self.order_owner.tolist()
        ids = self.order_id.tolist()
        seqs = self.order_seq.tolist()
        total = self.order_total.tolist()
        fs = self.order_fs.tolist()
        ff = self.order_ff.tolist()
        cancelled = self.order_cancelled.tolist()
        has_refund = self.order_has_refund.tolist()
        refund_amt = self.order_refund_amt.tolist()
        email_kind = self.order_email_kind.tolist()
        source = self.order_source.tolist()
        item_start = self.item_start.tolist()
        n_items = self.n_items.tolist()
        item_product = self.item_product.tolist()
        item_qty = self.item_qty.tolist()
        cust_ids = self.customer_id.tolist()
        price_s = [money(pr.price_cents) for pr in cat]
        guest_base = p.base + p.shopify + p.klaviyo_only
        fs_names = ("paid", "refunded", "partially_refunded", "pending", "voided")
        ff_names = (None, "fulfilled", "partial")
        sources = pools_source_names()
        out: list[bytes] = []
        for o in range(n):
            w = owner[o]
            oid = ids[o]
            if w < s:
                email = self.shopify_email[w]
                ek = email_kind[o]
                if email is not None and ek:
                    email = None if ek == 3 else _email_variant(email, ek)
                if self.invalid_email[w]:
                    email = None
                customer = {"id": cust_ids[w]}
            else:
                gp = guest_base + (w - s)
                customer = None
                domain = pools.EMAIL_DOMAINS[gp % len(pools.EMAIL_DOMAINS)]
                email = None if email_kind[o] == 3 else f"guest{gp * 7 + 3}@{domain}"
            lis = []
            li0 = item_start[o]
            li_base = LINE_ITEM_ID_BASE + seqs[o] * 8
            for k in range(n_items[o]):
                pr = cat[item_product[li0 + k]]
                lis.append(
                    {
                        "id": li_base + k,
                        "product_id": pr.id,
                        "title": pr.title,
                        "vendor": pr.vendor,
                        "product_type": pr.product_type,
                        "quantity": item_qty[li0 + k],
                        "price": price_s[item_product[li0 + k]],
                    }
                )
            refunds = []
            if has_refund[o]:
                if fs[o] == 1:
                    rli = [{"line_item_id": li["id"], "quantity": li["quantity"]} for li in lis]
                else:
                    rli = [{"line_item_id": lis[0]["id"], "quantity": 1}]
                refunds.append(
                    {
                        "id": REFUND_ID_BASE + seqs[o] * 4,
                        "order_id": oid,
                        "created_at": refund_s[o],
                        "transactions": [
                            {"amount": money(refund_amt[o]), "kind": "refund", "status": "success"}
                        ],
                        "refund_line_items": rli,
                    }
                )
            tp = money(total[o])
            out.append(
                dumps(
                    {
                        "id": oid,
                        "email": email,
                        "created_at": created_s[o],
                        "updated_at": updated_s[o],
                        "cancelled_at": updated_s[o] if cancelled[o] else None,
                        "cancel_reason": "customer" if cancelled[o] else None,
                        "financial_status": fs_names[fs[o]],
                        "fulfillment_status": ff_names[ff[o]],
                        "total_price": tp,
                        "subtotal_price": tp,
                        "total_tax": "0.00",
                        "currency": "USD",
                        "source_name": sources[source[o]],
                        "customer": customer,
                        "line_items": lis,
                        "refunds": refunds,
                    }
                )
            )
        return out

    # klaviyo ----------------------------------------------------------------------------------

    def profiles(self) -> None:
        """Profile rows: which person, which identifiers, primary or duplicate."""
        p, rng = self.plan, self.rng
        s = p.shopify
        shop_valid_phone = np.isin(self.phone_kind, [1, 2, 3])
        has_profile = (rng.random(s) < 0.8) & ~self.invalid_email
        u = rng.random(s)
        # link kinds: 0 email, 1 phone only, 2 other email + external_id
        kind = np.where((u < 0.03) & shop_valid_phone, 1, np.where(u < 0.05, 2, 0))
        kind = np.where(~self.has_email, np.where(shop_valid_phone, 1, 2), kind)
        ev = rng.random(s)
        email_variant = np.where(ev < 0.85, 0, np.where(ev < 0.95, 1, 2))
        ext = (kind == 2) | (rng.random(s) < 0.4)
        with_phone = (
            (kind == 1) | (shop_valid_phone & (rng.random(s) < 0.5)) | (rng.random(s) < 0.1)
        )
        dup = has_profile & (rng.random(s) < 0.015)
        dup_kind = np.where((kind == 0) & ((rng.random(s) < 0.6) | ~shop_valid_phone), 0, 1)
        dup = dup & ((dup_kind == 0) | shop_valid_phone)
        # rows: (person, slot, kind) where kind 0..2 as above, 3 dup email, 4 dup phone,
        # 5 klaviyo-only email, 6 klaviyo-only phone
        sp = np.nonzero(has_profile)[0]
        dp = np.nonzero(dup)[0]
        k_n = p.klaviyo_only
        kp = np.arange(s, s + k_n)
        k_phone_only = rng.random(k_n) < 0.1
        person = np.concatenate([sp, dp, kp])
        slot = np.concatenate([np.zeros(len(sp)), np.ones(len(dp)), np.zeros(k_n)]).astype(np.int64)
        rkind = np.concatenate([kind[sp], 3 + dup_kind[dp], np.where(k_phone_only, 6, 5)])
        order = np.lexsort((slot, person))
        self.prof_person = person[order]
        self.prof_slot = slot[order]
        self.prof_kind = rkind[order]
        self.email_variant = email_variant
        self.ext = ext
        self.with_phone = with_phone
        self.k_with_phone = rng.random(k_n) < 0.2
        n = len(person)
        pp = self.prof_person
        pc = self.created[pp]
        jitter = rng.normal(0, 20 * DAY, n).astype(np.int64)
        created = np.clip(pc + jitter, REF - HISTORY - 60 * DAY, REF - 3600)
        created = np.where(self.prof_slot == 1, created + rng.integers(DAY, 300 * DAY, n), created)
        created = np.minimum(created, REF - 3600)
        self.prof_created = created
        seq = (self.pidx[pp] * 2 + self.prof_slot).astype(np.uint64)
        hi = _scramble(seq, 40, 0x9E3779B1, 0x5BD1E995)
        lo = rng.integers(0, 1 << 40, n, dtype=np.int64).astype(np.uint64)
        ms = (created * 1000 + rng.integers(0, 1000, n)).astype(np.uint64)
        self.prof_id = _encode([(ms, 10), (hi, 8), (lo, 8)], CROCKFORD)
        self.prof_seq = seq
        self.summary.profiles = n
        self.summary.klaviyo_only_profiles = k_n
        self.summary.duplicate_profiles = len(dp)

    def events(self) -> list[bytes]:
        """Klaviyo events per profile, including Placed Order for linked Shopify orders."""
        rng, s = self.rng, self.plan.shopify
        n = len(self.prof_person)
        created = self.prof_created
        life = np.maximum(REF - created, 3600)
        engage = rng.gamma(0.7, 1.0 / 0.7, n)
        n_open = rng.poisson(4.5 * engage * np.minimum(life / YEAR, 3) / 1.5)
        n_click = rng.binomial(n_open, 0.13)
        n_view = rng.poisson(1.6 * engage)
        n_cart = rng.binomial(n_view, 0.3)
        n_active = rng.poisson(1.0 * engage)
        rows = np.arange(n)
        # opens
        o_row = np.repeat(rows, n_open)
        o_t = created[o_row] + (rng.random(len(o_row)) * life[o_row]).astype(np.int64)
        # clicks: a subset of each profile's opens, a little later
        open_starts = np.concatenate([[0], np.cumsum(n_open)[:-1]])
        ci = np.repeat(open_starts, n_click) + _subset_offsets(rng, n_open, n_click)
        c_row = o_row[ci]
        c_t = np.minimum(o_t[ci] + rng.exponential(1800, len(ci)).astype(np.int64), REF - 1)
        v_row = np.repeat(rows, n_view)
        v_t = created[v_row] + (rng.random(len(v_row)) * life[v_row]).astype(np.int64)
        pop = 1.0 / (np.arange(len(self.catalog)) + 5.0)
        v_prod = rng.choice(len(self.catalog), size=len(v_row), p=pop / pop.sum())
        view_starts = np.concatenate([[0], np.cumsum(n_view)[:-1]])
        ai = np.repeat(view_starts, n_cart) + _subset_offsets(rng, n_view, n_cart)
        a_row = v_row[ai]
        a_t = np.minimum(v_t[ai] + rng.exponential(600, len(ai)).astype(np.int64), REF - 1)
        a_prod = v_prod[ai]
        s_row = np.repeat(rows, n_active)
        s_t = created[s_row] + (rng.random(len(s_row)) * life[s_row]).astype(np.int64)
        # placed orders: every non-future order of the person, on their primary profile
        prim = (self.prof_slot == 0) & (self.prof_person < s)
        row_of_person = np.full(s, -1, dtype=np.int64)
        row_of_person[self.prof_person[prim]] = rows[prim]
        cust_orders = (self.order_owner < s) & ~self.order_future
        oidx = np.nonzero(cust_orders)[0]
        oidx = oidx[row_of_person[self.order_owner[oidx]] >= 0]
        p_row = row_of_person[self.order_owner[oidx]]
        p_t = self.order_time[oidx]
        ev_row = np.concatenate([o_row, c_row, v_row, a_row, s_row, p_row])
        ev_t = np.concatenate([o_t, c_t, v_t, a_t, s_t, p_t])
        ev_m = np.concatenate(
            [
                np.full(len(o_row), M_OPEN),
                np.full(len(c_row), M_CLICK),
                np.full(len(v_row), M_VIEW),
                np.full(len(a_row), M_CART),
                np.full(len(s_row), M_ACTIVE),
                np.full(len(p_row), M_ORDER),
            ]
        )
        ev_x = np.concatenate(
            [
                np.zeros(len(o_row) + len(c_row), np.int64),
                v_prod,
                a_prod,
                np.zeros(len(s_row), np.int64),
                oidx,
            ]
        )
        ev_t = np.minimum(ev_t, REF - 1)
        order = np.lexsort((ev_m, ev_t, ev_row))
        ev_row, ev_t, ev_m, ev_x = ev_row[order], ev_t[order], ev_m[order], ev_x[order]
        ne = len(ev_row)
        counts = np.bincount(ev_row, minlength=n)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        e_in_row = np.arange(ne) - np.repeat(starts, counts)
        key = (self.prof_seq[ev_row] << np.uint64(20)) | e_in_row.astype(np.uint64)
        ev_ids = _encode([(_scramble(key, 64, 0x2545F4914F6CDD1D, 0x14057B7EF767814F), 11)], BASE62)
        self.last_event = np.full(n, -1, dtype=np.int64)
        if ne:
            np.maximum.at(self.last_event, ev_row, ev_t)
        ev_dt = klaviyo_times(ev_t)
        week = ((ev_t - (REF - HISTORY)) // (7 * DAY)).tolist()
        utm = rng.integers(0, len(pools.UTM_SOURCES), ne).tolist()
        utm_m = rng.integers(0, len(pools.UTM_MEDIUMS), ne).tolist()
        metric_ids = [m for m, _ in METRICS]
        themes = pools.CAMPAIGN_THEMES
        prices = [pr.price_cents / 100 for pr in self.catalog]
        prof_id = self.prof_id
        order_ids = self.order_id.tolist()
        totals = self.order_total.tolist()
        li_start = self.item_start.tolist()
        li_n = self.n_items.tolist()
        li_prod = self.item_product.tolist()
        cat = self.catalog
        out: list[bytes] = []
        rows_l, ts_l, m_l, x_l = ev_row.tolist(), ev_t.tolist(), ev_m.tolist(), ev_x.tolist()
        for e in range(ne):
            m = m_l[e]
            x = x_l[e]
            if m <= M_CLICK:
                wk = week[e]
                theme, subject = themes[wk % len(themes)]
                props: dict[str, Any] = {
                    "Subject": subject,
                    "Campaign Name": f"{theme} #{wk + 1}",
                    "$message": f"C{wk:04d}",
                    "utm_source": "klaviyo",
                    "utm_medium": "email",
                    "utm_campaign": f"{theme.lower().replace(' ', '-')}-{wk + 1}",
                }
                if m == M_CLICK:
                    props["URL"] = f"https://shop.example.com/?utm_campaign=c{wk}"
            elif m <= M_CART:
                pr = cat[x]
                props = {
                    "ProductID": pr.id,
                    "ProductName": pr.title,
                    "Brand": pr.vendor,
                    "Categories": [pr.product_type],
                    "Price": prices[x],
                }
                if m == M_CART:
                    props["$value"] = prices[x]
                    props["Quantity"] = 1
            elif m == M_ACTIVE:
                props = {
                    "page": "https://shop.example.com/",
                    "utm_source": pools.UTM_SOURCES[utm[e]],
                    "utm_medium": pools.UTM_MEDIUMS[utm_m[e]],
                }
            else:
                items = [cat[li_prod[li_start[x] + k]] for k in range(li_n[x])]
                props = {
                    "OrderId": str(order_ids[x]),
                    "$value": totals[x] / 100,
                    "ItemNames": [it.title for it in items],
                    "Brands": sorted({it.vendor for it in items}),
                    "Categories": sorted({it.product_type for it in items}),
                }
            eid = ev_ids[e]
            props["$event_id"] = str(order_ids[x]) if m == M_ORDER else eid
            out.append(
                dumps(
                    {
                        "type": "event",
                        "id": eid,
                        "attributes": {
                            "timestamp": ts_l[e],
                            "datetime": ev_dt[e],
                            "event_properties": props,
                        },
                        "relationships": {
                            "profile": {"data": {"type": "profile", "id": prof_id[rows_l[e]]}},
                            "metric": {"data": {"type": "metric", "id": metric_ids[m]}},
                        },
                    }
                )
            )
        self.summary.events = ne
        return out

    def profiles_json(self) -> list[bytes]:
        """Profile records in Klaviyo JSON:API shape (after events, for last_event_date)."""
        rng, s = self.rng, self.plan.shopify
        n = len(self.prof_person)
        created = self.prof_created
        updated = created + (rng.random(n) * (REF - 1 - created)).astype(np.int64)
        updated = np.maximum(updated, created)
        created_s = klaviyo_times(created)
        updated_s = klaviyo_times(updated)
        last_ev = self.last_event
        last_ev_s = klaviyo_times(np.maximum(last_ev, 0))
        has_name = (rng.random(n) < 0.9).tolist()
        loc_pick = rng.random(n).tolist()
        title_pick = rng.random(n).tolist()
        consent_flip = (rng.random(n) < 0.05).tolist()
        k_consent = rng.choice(3, size=n, p=[0.75, 0.2, 0.05]).tolist()
        person = self.prof_person.tolist()
        slot = self.prof_slot.tolist()
        kind = self.prof_kind.tolist()
        ext = self.ext.tolist()
        with_phone = self.with_phone.tolist()
        email_variant = self.email_variant.tolist()
        k_with_phone = self.k_with_phone.tolist()
        ec_state = self.ec_state.tolist()
        cust_ids = self.customer_id.tolist()
        n_addr = self.n_addr.tolist()
        # predictive analytics from the person's order history and latent purchase process
        lam = self.lam
        p_alive = np.exp(-np.maximum(REF - self.last_order_t, 0) / (self.lifetime * YEAR))
        pred_orders = np.round(lam * p_alive, 2).tolist()
        churn = np.round(1 - p_alive, 3).tolist()
        n_orders = self.n_orders.tolist()
        spent = self.spent.tolist()
        first_t = self.first_order_t.tolist()
        last_t = self.last_order_t.tolist()
        next_t = klaviyo_times(
            np.maximum(self.last_order_t, 0) + (YEAR / np.maximum(lam, 0.05)).astype(np.int64)
        )
        cities = [c.cities for c in pools.COUNTRIES]
        out: list[bytes] = []
        for r in range(n):
            i = person[r]
            k = kind[r]
            first, last = self.name(i)
            if not has_name[r] and k >= 5:
                first = last = None
            email: str | None = None
            phone: str | None = None
            external_id: str | None = None
            if i < s:
                base_email = self.shopify_email[i]
                if k == 0:
                    email = _email_variant(base_email or "", email_variant[i])
                elif k == 2:
                    email = self.work_email(i)
                elif k == 3:
                    email = (base_email or "").upper()
                if k in (0, 1, 2) and ext[i]:
                    external_id = str(cust_ids[i])
                if k in (1, 4) or (k != 3 and with_phone[i]):
                    phone = self.phone_e164(i)
                source = "Shopify"
                es = ec_state[i]
                consent = ("SUBSCRIBED", "NEVER_SUBSCRIBED", "UNSUBSCRIBED", "NEVER_SUBSCRIBED")[es]
                if consent_flip[r]:
                    consent = "NEVER_SUBSCRIBED"
            else:
                if k == 5:
                    email = self.email(i)
                if k == 6 or k_with_phone[i - s]:
                    phone = self.phone_e164(i)
                source = "Newsletter Popup" if k == 5 else "SMS Keyword"
                consent = ("SUBSCRIBED", "UNSUBSCRIBED", "NEVER_SUBSCRIBED")[k_consent[r]]
            location = None
            lp_val = loc_pick[r]
            if i < s and n_addr[i] > 0 and lp_val < 0.85:
                a = int(self.addr_start[i])
                ci = self.addr_country[a]
                city = cities[ci][self.addr_city[a]]
                location = {
                    "address1": self.locales[ci].streets[self.addr_street[a]],
                    "address2": None,
                    "city": city.name,
                    "region": city.province,
                    "country": pools.COUNTRIES[ci].name,
                    "zip": self.locales[ci].postcodes[self.addr_zip[a]],
                    "timezone": city.timezone,
                    "latitude": city.latitude,
                    "longitude": city.longitude,
                    "ip": None,
                }
            elif lp_val < 0.4:
                ci = self._country[i]
                city = cities[ci][int(lp_val * 1000) % len(cities[ci])]
                location = {
                    "address1": None,
                    "address2": None,
                    "city": city.name,
                    "region": city.province,
                    "country": pools.COUNTRIES[ci].name,
                    "zip": None,
                    "timezone": city.timezone,
                    "latitude": city.latitude,
                    "longitude": city.longitude,
                    "ip": None,
                }
            subscribed = consent == "SUBSCRIBED"
            subs: dict[str, Any] = {
                "email": {
                    "marketing": {
                        "can_receive_email_marketing": subscribed and email is not None,
                        "consent": consent if email is not None else "NEVER_SUBSCRIBED",
                        "consent_timestamp": updated_s[r]
                        if consent != "NEVER_SUBSCRIBED"
                        else None,
                        "method": "FORM" if source != "Shopify" else "SHOPIFY",
                        "suppression": [],
                    }
                },
                "sms": None
                if phone is None
                else {
                    "marketing": {
                        "can_receive_sms_marketing": subscribed,
                        "consent": consent,
                        "consent_timestamp": updated_s[r]
                        if consent != "NEVER_SUBSCRIBED"
                        else None,
                        "method": "TEXT" if source == "SMS Keyword" else "SHOPIFY",
                    }
                },
            }
            pa = None
            if i < s and slot[r] == 0 and n_orders[i] > 0:
                no = n_orders[i]
                hist = spent[i] / 100
                aov = round(hist / no, 2)
                po = pred_orders[i]
                pa = {
                    "historic_clv": round(hist, 2),
                    "predicted_clv": round(po * aov, 2),
                    "total_clv": round(hist + po * aov, 2),
                    "historic_number_of_orders": no,
                    "predicted_number_of_orders": po,
                    "average_days_between_orders": round(
                        (last_t[i] - first_t[i]) / DAY / (no - 1), 1
                    )
                    if no > 1
                    else None,
                    "average_order_value": aov,
                    "churn_probability": churn[i],
                    "expected_date_of_next_order": next_t[i] if no > 1 else None,
                }
            props: dict[str, Any] = {"$source": source}
            if i < s:
                props["Accepts Marketing"] = subscribed
            out.append(
                dumps(
                    {
                        "type": "profile",
                        "id": self.prof_id[r],
                        "attributes": {
                            "email": email,
                            "phone_number": phone,
                            "external_id": external_id,
                            "anonymous_id": None,
                            "first_name": first,
                            "last_name": last,
                            "organization": None if title_pick[r] > 0.05 else "Acme Corp",
                            "title": None if title_pick[r] > 0.03 else "Buyer",
                            "image": None,
                            "created": created_s[r],
                            "updated": updated_s[r],
                            "last_event_date": last_ev_s[r] if last_ev[r] >= 0 else None,
                            "location": location,
                            "properties": props,
                            "subscriptions": subs,
                            "predictive_analytics": pa,
                        },
                    }
                )
            )
        return out

    def truth(self) -> list[bytes]:
        """Which person each live Shopify customer and each Klaviyo profile belongs to."""
        p = self.plan
        recs: list[bytes] = []
        ids = self.customer_id.tolist()
        for i in range(p.live):
            recs.append(
                dumps(
                    {
                        "source": "shopify",
                        "external_id": str(ids[i]),
                        "person_id": person_id(self.pidx_l[i]),
                    }
                )
            )
        for r, i in enumerate(self.prof_person.tolist()):
            recs.append(
                dumps(
                    {
                        "source": "klaviyo",
                        "external_id": self.prof_id[r],
                        "person_id": person_id(self.pidx_l[i]),
                    }
                )
            )
        return recs

    def run(self) -> ChunkOutput:
        self.persons()
        self._bind_lists()
        self.shopify_attributes()
        self.orders()
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


def pools_source_names() -> tuple[str, ...]:
    """Order source_name values (web checkout dominates)."""
    return SOURCE_NAMES


def _subset_offsets(rng: np.random.Generator, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """For each group with n items, k distinct offsets in [0, n), concatenated (vectorised).

    Random keys sorted within each group; the k smallest ranks are a uniform subset.
    """
    total = int(n.sum())
    if total == 0 or int(k.sum()) == 0:
        return np.zeros(0, dtype=np.int64)
    group = np.repeat(np.arange(len(n)), n)
    keys = rng.random(total)
    order = np.lexsort((keys, group))
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    local = order - np.repeat(starts, n)
    rank = np.arange(total) - np.repeat(starts, n)
    chosen = rank < np.repeat(k, n)
    return local[chosen]


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


def _metrics_json() -> bytes:
    created = klaviyo_times([REF - HISTORY - 90 * DAY])[0]
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


def generate_store(
    out: Path,
    customers: int,
    seed: int = 0,
    *,
    orders_per_customer: float = 3.0,
    progress: bool = False,
    workers: int | None = None,
) -> StoreSummary:
    """Write a sandbox store with `customers` live Shopify customers to `out`.

    Same arguments give byte-identical files (store.json's generated_at is REFERENCE_TIME, the
    store's "now"); `workers` (default: up to 2 processes when there is more than one chunk)
    only changes speed, never output.
    """
    out = Path(out)
    for sub in ("shopify", "klaviyo", "_truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    plans = chunk_plan(customers)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(plans) > 1 else 1
    lam_scale = rate_scale(orders_per_customer)
    summary = StoreSummary(seed=seed, reference_time=REFERENCE_TIME.isoformat())
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
    (out / "klaviyo/metrics.jsonl").write_bytes(_metrics_json())
    for rel in [*FILES.values(), "klaviyo/metrics.jsonl"]:
        summary.files[rel] = (out / rel).stat().st_size
    meta = {
        **asdict(summary),
        "generated_at": REFERENCE_TIME.isoformat(),
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
    touch_order = dict(zip(picked, (rng.random(k) < 0.5).tolist(), strict=True))
    rename = dict(zip(picked, (rng.random(k) < 0.3).tolist(), strict=True))
    rephone = dict(zip(picked, (rng.random(k) < 0.3).tolist(), strict=True))
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
        if refundable and rng.random() < 0.5:
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
