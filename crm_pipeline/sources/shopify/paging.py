"""Incremental pulls: customers and orders updated since a time, page by page."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from crm_pipeline.sources.paginate import PageInfoPaginator, paginate
from crm_pipeline.sources.shopify.base import _ClientBase
from crm_pipeline.sources.shopify.convert import _nodes, customer_to_rest, order_to_rest
from crm_pipeline.sources.shopify.queries import (
    CUSTOMERS_QUERY,
    ORDER_LINE_ITEMS_QUERY,
    ORDERS_QUERY,
    _search_since,
)


class _Paging(_ClientBase):
    """The paginated pulls of ShopifyClient."""

    def _paginate(
        self, query: str, operation: str, root: str, variables: dict[str, Any], cost: int
    ) -> Iterator[dict[str, Any]]:
        """The nodes of the connection `root`, page after page."""
        pages = paginate(
            PageInfoPaginator((root,)),
            lambda request: self.execute(query, request, operation, cost=cost),
            variables,
        )
        for data in pages:
            for edge in data[root]["edges"]:
                yield edge["node"]

    def customers_updated_since(self, since: datetime) -> Iterator[dict[str, Any]]:
        """Customers with updated_at >= since (Shopify's `>` is inclusive), oldest first."""
        variables = {"first": self.page_size, "query": _search_since(since)}
        cost = 2 + self.page_size * 4
        for node in self._paginate(
            CUSTOMERS_QUERY, "CustomersUpdatedSince", "customers", variables, cost
        ):
            yield customer_to_rest(node)

    def orders_updated_since(self, since: datetime) -> Iterator[dict[str, Any]]:
        """Orders with updated_at >= since, oldest first, with all their line items."""
        variables = {
            "first": self.orders_page_size,
            "lineItemsFirst": self.line_items_page_size,
            "query": _search_since(since),
        }
        cost = 2 + self.orders_page_size * (13 + 2 * self.line_items_page_size)
        for node in self._paginate(ORDERS_QUERY, "OrdersUpdatedSince", "orders", variables, cost):
            items = node.get("lineItems") or {}
            more = PageInfoPaginator(("node", "lineItems"))
            more.update_from_connection(items)
            if more.has_next_page:
                node["lineItems"] = {
                    "nodes": list(_nodes(items)) + list(self._more_line_items(node["id"], more))
                }
            yield order_to_rest(node)

    def _more_line_items(
        self, order_gid: str, paginator: PageInfoPaginator
    ) -> Iterator[dict[str, Any]]:
        """The order's line items after those its own page held (`paginator` read that page)."""
        first = 100
        pages = paginate(
            paginator,
            lambda request: self.execute(
                ORDER_LINE_ITEMS_QUERY, request, "OrderLineItems", cost=3 + first * 2
            ),
            {"id": order_gid, "first": first},
        )
        for data in pages:
            yield from _nodes((data.get("node") or {}).get("lineItems") or {})
