"""Incremental pulls: customers and orders updated since a time, page by page."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from crm_pipeline.sources.shopify.convert import _nodes, customer_to_rest, order_to_rest
from crm_pipeline.sources.shopify.queries import (
    CUSTOMERS_QUERY,
    ORDER_LINE_ITEMS_QUERY,
    ORDERS_QUERY,
    _search_since,
)


class _Paging:
    """The paginated pulls of ShopifyClient."""

    def _paginate(
        self, query: str, operation: str, root: str, variables: dict, cost: int
    ) -> Iterator[dict]:
        after = None
        while True:
            data = self.execute(query, {**variables, "after": after}, operation, cost=cost)
            conn = data[root]
            for edge in conn["edges"]:
                yield edge["node"]
            info = conn["pageInfo"]
            if not info["hasNextPage"]:
                return
            after = info["endCursor"]

    def customers_updated_since(self, since: datetime) -> Iterator[dict]:
        """Customers with updated_at >= since (Shopify's `>` is inclusive), oldest first."""
        variables = {"first": self.page_size, "query": _search_since(since)}
        cost = 2 + self.page_size * 4
        for node in self._paginate(
            CUSTOMERS_QUERY, "CustomersUpdatedSince", "customers", variables, cost
        ):
            yield customer_to_rest(node)

    def orders_updated_since(self, since: datetime) -> Iterator[dict]:
        """Orders with updated_at >= since, oldest first, with all their line items."""
        variables = {
            "first": self.orders_page_size,
            "lineItemsFirst": self.line_items_page_size,
            "query": _search_since(since),
        }
        cost = 2 + self.orders_page_size * (13 + 2 * self.line_items_page_size)
        for node in self._paginate(ORDERS_QUERY, "OrdersUpdatedSince", "orders", variables, cost):
            items = node.get("lineItems") or {}
            if (items.get("pageInfo") or {}).get("hasNextPage"):
                node["lineItems"] = {
                    "nodes": list(_nodes(items))
                    + list(self._more_line_items(node["id"], items["pageInfo"]["endCursor"]))
                }
            yield order_to_rest(node)

    def _more_line_items(self, order_gid: str, after: str) -> Iterator[dict]:
        first = 100
        while True:
            data = self.execute(
                ORDER_LINE_ITEMS_QUERY,
                {"id": order_gid, "first": first, "after": after},
                "OrderLineItems",
                cost=3 + first * 2,
            )
            conn = (data.get("node") or {}).get("lineItems") or {}
            yield from _nodes(conn)
            info = conn.get("pageInfo") or {}
            if not info.get("hasNextPage"):
                return
            after = info["endCursor"]
