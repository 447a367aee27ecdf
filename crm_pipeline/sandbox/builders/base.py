"""Constants, record formatting and id helpers shared by the store generator
(crm_pipeline/sandbox/generate.py) and its chunk builders. Moved from generate.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from crm_pipeline.sandbox.builders.odds import (
    SIGNUP_AGE_BETA,
)

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


@dataclass(frozen=True)
class ChunkPlan:
    """Person-number ranges of one chunk: live, deleted, Klaviyo-only and guest persons."""

    index: int
    live: int
    deleted: int
    klaviyo_only: int
    guests: int
    base: int
    ref: int = REF  # the store's "now" (unix seconds): every time is drawn relative to it

    @property
    def shopify(self) -> int:
        return self.live + self.deleted


def _draw_age(rng: np.random.Generator, n: int) -> np.ndarray:
    # Skewed towards recent sign-ups, as in a growing shop.
    return np.maximum(HISTORY * rng.beta(*SIGNUP_AGE_BETA, n), 3600.0)


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
