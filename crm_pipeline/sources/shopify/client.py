"""ShopifyClient: one shop's Admin GraphQL API, or the sandbox when `api_url` is set."""

from __future__ import annotations

import threading
from typing import Any

import shopify

from crm_pipeline.shopify_admin_schema import newest_version
from crm_pipeline.sources.http import DEFAULT_POLICY, SourceRetryPolicy
from crm_pipeline.sources.rate_limits import ApiUsage
from crm_pipeline.sources.shopify.bulk import _Bulk
from crm_pipeline.sources.shopify.lookups import _Lookups
from crm_pipeline.sources.shopify.paging import _Paging
from crm_pipeline.sources.shopify.transport import _Transport
from crm_pipeline.sources.shopify.webhooks import _Webhooks

# the newest Admin API version whose published schema ships in crm_pipeline/shopify_admin_schema
# (every document the client sends is validated against it in tests)
DEFAULT_API_VERSION = newest_version()


class ShopifyClient(_Transport, _Paging, _Bulk, _Lookups, _Webhooks):
    """Pulls customers and orders from one shop (or the sandbox, when `api_url` is set)."""

    def __init__(
        self,
        shop: str | None,
        access_token: str,
        api_version: str = DEFAULT_API_VERSION,
        api_url: str | None = None,
        timeout: float = 30,
        *,
        retry_policy: SourceRetryPolicy = DEFAULT_POLICY,
        page_size: int = 100,
        orders_page_size: int = 8,
        line_items_page_size: int = 50,
        bulk_poll_max: float = 10.0,
        bulk_timeout: float = 6 * 3600,
    ) -> None:
        self.session = shopify.Session(shop or "sandbox", api_version, access_token)
        self.api_version = api_version
        self.api_url = api_url.rstrip("/") if api_url else None
        self.timeout = timeout
        self.policy = retry_policy
        self.page_size = page_size
        self.orders_page_size = orders_page_size
        self.line_items_page_size = line_items_page_size
        self.bulk_poll_max = bulk_poll_max
        self.bulk_timeout = bulk_timeout
        # last throttleStatus seen, to pace requests before the bucket runs dry
        self._bucket: tuple[float, float, float] | None = None  # (available, restore, at)
        self._bucket_lock = threading.Lock()
        # requests and cost points spent, for the pull's floor metadata (sources/rate_limits.py)
        self.usage = ApiUsage()
        # the last customers bulk operation as it finished, and the shop's count before it
        self.last_bulk: dict[str, Any] | None = None
        self.expected_customers: dict[str, Any] | None = None
