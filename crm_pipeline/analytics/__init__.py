"""Customer analytics over the CRM database: metrics, predictive scores, segments, stats,
search and export. Each module is plain functions over a SQLAlchemy engine or connection;
the Dagster assets in crm_pipeline.defs.analytics call them.
"""

from importlib import import_module
from typing import Any

# name -> module: imported on first use, so importing a submodule (or the code location) does
# not pull in pandas and numpy through crm_pipeline.analytics.scores
_EXPORTS = {
    "export_customers": "export",
    "changed_customer_ids": "metrics",
    "compute_metrics": "metrics",
    "write_scores": "scores",
    "SearchError": "search",
    "SearchPage": "search",
    "render_table": "search",
    "search": "search",
    "refresh_segments": "segments",
    "read_stats": "stats",
    "segment_distribution": "stats",
}

__all__ = [
    "SearchError",
    "SearchPage",
    "changed_customer_ids",
    "compute_metrics",
    "export_customers",
    "read_stats",
    "refresh_segments",
    "render_table",
    "search",
    "segment_distribution",
    "write_scores",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
