"""Point lookups: the shop's customer count, which customers still exist (reconcile), and the
journeys of orders Shopify had not built a journey for when they were pulled."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from crm_pipeline.sources.shopify.base import _ClientBase
from crm_pipeline.sources.shopify.convert import gid_to_id, journey_to_rest
from crm_pipeline.sources.shopify.queries import (
    CUSTOMER_NODES,
    CUSTOMERS_COUNT,
    NODES_PER_QUERY,
    ORDER_JOURNEYS_QUERY,
)

# orders per journey lookup: each costs ~9 points (the journey, two visits, their UTMs and
# marketing events), so 100 stay under the 1000-point query limit
JOURNEYS_PER_QUERY = 100


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

    def order_journeys(self, ids: Iterable[str | int]) -> dict[str, dict[str, Any]]:
        """order id -> {"source_name", "customer_journey_summary"} (REST shape, None when
        Shopify has no journey) for the orders that still exist."""
        wanted = [str(i) for i in ids]
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), JOURNEYS_PER_QUERY):
            gids = [f"gid://shopify/Order/{i}" for i in wanted[start : start + JOURNEYS_PER_QUERY]]
            data = self.execute(
                ORDER_JOURNEYS_QUERY, {"ids": gids}, "OrderJourneys", cost=1 + 9 * len(gids)
            )
            for node in data.get("nodes") or []:
                if node and node.get("id"):
                    out[str(gid_to_id(node["id"]))] = {
                        "source_name": node.get("sourceName"),
                        "customer_journey_summary": journey_to_rest(node),
                    }
        return out
