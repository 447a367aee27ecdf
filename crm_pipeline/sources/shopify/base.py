"""What the mixins of ShopifyClient (transport, paging, bulk, lookups, webhooks) use of each
other, declared for the type checker: attributes ShopifyClient.__init__ sets and stubs of the
methods another mixin implements. Annotations only: nothing here is set or called at run time
(every stub is overridden earlier in ShopifyClient's MRO)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import shopify

from crm_pipeline.sources.http import SourceRetryPolicy
from crm_pipeline.sources.rate_limits import ApiUsage


class _ClientBase:
    """The attributes and cross-mixin methods of ShopifyClient."""

    session: shopify.Session
    api_version: str
    api_url: str | None
    timeout: float
    policy: SourceRetryPolicy
    page_size: int
    orders_page_size: int
    line_items_page_size: int
    bulk_poll_max: float
    bulk_timeout: float
    # last throttleStatus seen: (available, restore, at)
    _bucket: tuple[float, float, float] | None
    _bucket_lock: threading.Lock
    usage: ApiUsage
    last_bulk: dict[str, Any] | None
    expected_customers: dict[str, Any] | None

    def execute(
        self,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str,
        *,
        cost: int = 10,
    ) -> dict[str, Any]:
        """One GraphQL operation (transport.py)."""
        raise NotImplementedError

    def _paginate(
        self, query: str, operation: str, root: str, variables: dict[str, Any], cost: int
    ) -> Iterator[dict[str, Any]]:
        """The nodes of a connection, page after page (paging.py)."""
        raise NotImplementedError

    def customers_count(self) -> dict[str, Any]:
        """The shop's customer count (lookups.py)."""
        raise NotImplementedError
