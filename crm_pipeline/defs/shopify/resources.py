"""The Shopify resource: configuration bound from `SHOPIFY_*` env vars, a client per use."""

from __future__ import annotations

from typing import cast

import dagster as dg

from crm_pipeline.sources.shopify import DEFAULT_API_VERSION, ShopifyClient


class ShopifyResource(dg.ConfigurableResource):
    """Admin API access to one shop, or to the sandbox when `api_url` is set."""

    shop: str | None = None
    access_token: str | None = None
    api_version: str = DEFAULT_API_VERSION
    api_url: str | None = None
    timeout: float = 30.0

    def get_client(self) -> ShopifyClient:
        """A client for this shop; fails with what to set when the configuration is missing."""
        if self.api_url:
            # the sandbox only checks that a token is present
            return ShopifyClient(
                self.shop or "sandbox",
                self.access_token or "sandbox-token",
                api_version=self.api_version,
                api_url=self.api_url,
                timeout=self.timeout,
            )
        missing = [
            name
            for name, value in (
                ("SHOPIFY_SHOP", self.shop),
                ("SHOPIFY_ACCESS_TOKEN", self.access_token),
            )
            if not value
        ]
        if missing:
            raise dg.Failure(
                description=(
                    f"Shopify is not configured: set {' and '.join(missing)} "
                    "(the shop's myshopify domain and an Admin API access token), "
                    "or SHOPIFY_API_URL to a sandbox started with `crm-pipeline sandbox serve`."
                )
            )
        return ShopifyClient(
            self.shop,
            cast(str, self.access_token),  # None only against a sandbox (api_url set)
            api_version=self.api_version,
            timeout=self.timeout,
        )
