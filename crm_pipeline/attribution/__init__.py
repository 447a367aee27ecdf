"""Where orders come from: Shopify's customer journey per order (first and last visit) and the
Klaviyo flow or campaign an order event credits, kept in `order_attributions` (docs/attribution.md).

`journey` turns an order's journey into a row and a channel; `store` writes those rows, links
Klaviyo's attributions and finds the journeys Shopify had not built yet, to ask again.
"""
