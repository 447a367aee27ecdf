"""Identity resolution: which person does a new source record belong to?

Rules (docs/identity-resolution.md), applied in this order to records not yet linked:
1. the same normalised email (trim + lowercase) as a live customer or another new record;
2. the same E.164 phone, when it names exactly one live customer;
3. a Klaviyo profile whose `external_id` is a Shopify customer id, and the reverse.

A union is refused when it would put two existing customers into one person (a stale
external_id must not merge two known customers), and a phone or email match is refused when it
would join two different emails (families share phones). An explicit external_id link may join
different emails: people give Klaviyo a work address and Shopify a private one.
Records already linked in `customer_sources` keep their customer (re-pulls never re-resolve).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from crm_pipeline.db.copy import text_array

_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def random_uuids(n: int) -> list[str]:
    """n random (version 4) UUIDs as text, from one read of the OS's random source:
    `uuid.uuid4()` reads it once per id, which showed in the load's profile."""
    data = os.urandom(16 * n).hex()
    return [
        f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"
        for h in (data[i : i + 32] for i in range(0, 32 * n, 32))
    ]


@dataclass(slots=True)
class Candidate:
    """A new source record to resolve."""

    source: str
    external_id: str
    email: str | None
    phone: str | None
    link_shopify_id: str | None


class _Components:
    """Union-find whose components remember their emails and existing customers."""

    def __init__(self) -> None:
        self.parent: dict[object, object] = {}
        self.emails: dict[object, set[str]] = {}
        self.customers: dict[object, set[str]] = {}

    def add(self, node: object, email: str | None = None, customer: str | None = None) -> None:
        if node not in self.parent:
            self.parent[node] = node
            self.emails[node] = set()
            self.customers[node] = set()
        root = self.find(node)
        if email:
            self.emails[root].add(email)
        if customer:
            self.customers[root].add(customer)

    def find(self, node: object) -> object:
        parent = self.parent
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    def union(self, a: object, b: object, *, explicit: bool = False) -> bool:
        """Join two components; `explicit` links (external ids) may carry different emails."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        emails = self.emails[ra] | self.emails[rb]
        customers = self.customers[ra] | self.customers[rb]
        if (len(emails) > 1 and not explicit) or len(customers) > 1:
            return False
        self.parent[rb] = ra
        self.emails[ra], self.customers[ra] = emails, customers
        del self.emails[rb], self.customers[rb]
        return True


def resolve(conn: sa.Connection, candidates: Sequence[Candidate]) -> tuple[list[str], set[str]]:
    """Customer id (existing or new) for each candidate, and the set of new customer ids."""
    if not candidates:
        return [], set()
    emails = sorted({c.email for c in candidates if c.email})
    phones = sorted({c.phone for c in candidates if c.phone})
    links = sorted({c.link_shopify_id for c in candidates if c.link_shopify_id})
    shopify_ids = sorted({c.external_id for c in candidates if c.source == "shopify"})

    by_email: dict[str, tuple[str, str | None]] = {}
    if emails:
        for row in conn.execute(
            sa.text(
                "SELECT id::text, email_lowercase FROM customers "
                "WHERE email_lowercase = ANY(CAST(:emails AS text[])) AND deleted_at IS NULL "
                "AND merged_into IS NULL"
            ),
            {"emails": text_array(emails)},
        ):
            by_email[row.email_lowercase] = (row.id, row.email_lowercase)
    by_phone: dict[str, tuple[str, str | None]] = {}
    if phones:
        for row in conn.execute(
            sa.text(
                "SELECT phone_normalized, min(id::text) AS id, count(*) AS n, "
                "min(email_lowercase) AS email FROM customers "
                "WHERE phone_normalized = ANY(CAST(:phones AS text[])) AND deleted_at IS NULL "
                "AND merged_into IS NULL GROUP BY phone_normalized"
            ),
            {"phones": text_array(phones)},
        ):
            if row.n == 1:
                by_phone[row.phone_normalized] = (row.id, row.email)
    shopify_link: dict[str, tuple[str, str | None]] = {}
    if links:
        for row in conn.execute(
            sa.text(
                "SELECT s.external_id, c.id::text AS id, c.email_lowercase FROM customer_sources s "
                "JOIN customers c ON c.id = s.customer_id "
                "WHERE s.source = 'shopify' AND s.external_id = ANY(CAST(:ids AS text[])) "
                "AND c.deleted_at IS NULL"
            ),
            {"ids": text_array(links)},
        ):
            shopify_link[row.external_id] = (row.id, row.email_lowercase)
    klaviyo_back: dict[str, list[tuple[str, str | None]]] = {}
    if shopify_ids:
        for row in conn.execute(
            sa.text(
                "SELECT s.profile ->> 'link_shopify_id' AS link, c.id::text AS id, "
                "c.email_lowercase FROM customer_sources s "
                "JOIN customers c ON c.id = s.customer_id "
                "WHERE s.source = 'klaviyo' "
                "AND s.profile ->> 'link_shopify_id' = ANY(CAST(:ids AS text[])) "
                "AND c.deleted_at IS NULL"
            ),
            {"ids": text_array(shopify_ids)},
        ):
            klaviyo_back.setdefault(row.link, []).append((row.id, row.email_lowercase))

    comps = _Components()
    for i, c in enumerate(candidates):
        comps.add(i, email=c.email)

    def join_existing(i: int, match: tuple[str, str | None], explicit: bool = False) -> None:
        node = ("customer", match[0])
        comps.add(node, email=match[1], customer=match[0])
        comps.union(node, i, explicit=explicit)

    # 1. email: existing customers, then other new records with the same email
    first_with_email: dict[str, int] = {}
    for i, c in enumerate(candidates):
        if not c.email:
            continue
        if c.email in by_email:
            join_existing(i, by_email[c.email])
        if c.email in first_with_email:
            comps.union(first_with_email[c.email], i)
        else:
            first_with_email[c.email] = i
    # 2. phone
    first_with_phone: dict[str, int] = {}
    for i, c in enumerate(candidates):
        if not c.phone:
            continue
        if c.phone in by_phone:
            join_existing(i, by_phone[c.phone])
        if c.phone in first_with_phone:
            comps.union(first_with_phone[c.phone], i)
        else:
            first_with_phone[c.phone] = i
    # 3. Klaviyo external_id <-> Shopify id, both directions, existing and within the batch
    shopify_in_batch = {c.external_id: i for i, c in enumerate(candidates) if c.source == "shopify"}
    for i, c in enumerate(candidates):
        if c.source == "klaviyo" and c.link_shopify_id:
            if c.link_shopify_id in shopify_link:
                join_existing(i, shopify_link[c.link_shopify_id], explicit=True)
            if c.link_shopify_id in shopify_in_batch:
                comps.union(shopify_in_batch[c.link_shopify_id], i, explicit=True)
        if c.source == "shopify":
            for match in klaviyo_back.get(c.external_id, []):
                join_existing(i, match, explicit=True)

    new_ids: dict[object, str] = {}
    result: list[str] = []
    created: set[str] = set()
    fresh = iter(random_uuids(len(candidates)))
    for i in range(len(candidates)):
        root = comps.find(i)
        existing = comps.customers[root]
        if existing:
            result.append(next(iter(existing)))
            continue
        if root not in new_ids:
            new_ids[root] = next(fresh)
            created.add(new_ids[root])
        result.append(new_ids[root])
    return result, created
