"""Shopify domain: the resource that hands assets a configured `ShopifyClient`."""
