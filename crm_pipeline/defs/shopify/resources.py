"""The Shopify resource: configuration bound from `SHOPIFY_*` env vars, a client per use."""

from __future__ import annotations

from typing import cast

import dagster as dg

from crm_pipeline.env_binding import resolve
from crm_pipeline.sources.shopify import DEFAULT_API_VERSION, ShopifyClient


class ShopifyResource(dg.ConfigurableResource):
    """Admin API access to one shop, or to the sandbox when `api_url` is set. Each setting is a
    value or an `env("NAME")` binding (crm_pipeline/env_binding.py), read when a client is made."""

    shop: str | None = None
    access_token: str | None = None
    api_version: str = DEFAULT_API_VERSION
    api_url: str | None = None
    timeout: float = 30.0

    def get_client(self) -> ShopifyClient:
        """A client for this shop; fails with what to set when the configuration is missing."""
        shop, access_token, api_url = (
            resolve(self.shop),
            resolve(self.access_token),
            resolve(self.api_url),
        )
        api_version = resolve(self.api_version) or DEFAULT_API_VERSION
        if api_url:
            # the sandbox only checks that a token is present
            return ShopifyClient(
                shop or "sandbox",
                access_token or "sandbox-token",
                api_version=api_version,
                api_url=api_url,
                timeout=self.timeout,
            )
        missing = [
            name
            for name, value in (
                ("SHOPIFY_SHOP", shop),
                ("SHOPIFY_ACCESS_TOKEN", access_token),
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
            shop,
            cast(str, access_token),  # checked above
            api_version=api_version,
            timeout=self.timeout,
        )
