"""Dagster definitions of the analytics domain: metrics, segments, stats and the export job."""
