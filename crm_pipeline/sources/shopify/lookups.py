"""Point lookups: the shop's customer count and which customers still exist (reconcile)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from crm_pipeline.sources.shopify.base import _ClientBase
from crm_pipeline.sources.shopify.convert import gid_to_id
from crm_pipeline.sources.shopify.queries import CUSTOMER_NODES, CUSTOMERS_COUNT, NODES_PER_QUERY


class _Lookups(_ClientBase):
    """The point lookups of ShopifyClient."""

    def customers_count(self) -> dict[str, Any]:
        """The shop's customer count, as `{"count": N, "precision": "EXACT"|"AT_LEAST"}`."""
        data = self.execute(CUSTOMERS_COUNT, {}, "CustomersCount", cost=1)
        return cast(
            dict[str, Any], data.get("customersCount") or {"count": 0, "precision": "EXACT"}
        )

    def customers_alive(self, ids: Iterable[str | int]) -> set[str]:
        """Which of these customer ids (numeric or gid) still exist in the shop, asked by
        `nodes(ids:)` in batches: a point lookup before a reconcile deletes them."""
        wanted = [str(i) for i in ids]
        alive: set[str] = set()
        for start in range(0, len(wanted), NODES_PER_QUERY):
            batch = wanted[start : start + NODES_PER_QUERY]
            gids = [i if i.startswith("gid://") else f"gid://shopify/Customer/{i}" for i in batch]
            data = self.execute(CUSTOMER_NODES, {"ids": gids}, "CustomerNodes", cost=1 + len(gids))
            found = {gid_to_id(n["id"]) for n in data.get("nodes") or [] if n and n.get("id")}
            alive.update(i for i, g in zip(batch, gids, strict=True) if gid_to_id(g) in found)
        return alive
