"""Dagster definitions of order attribution: the `order_attribution` asset (docs/attribution.md)."""
