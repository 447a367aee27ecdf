"""Customer analytics over the CRM database: metrics, predictive scores, segments, stats,
search and export. Each module is plain functions over a SQLAlchemy engine or connection;
the Dagster assets in crm_pipeline.defs.analytics call them.
"""

from crm_pipeline.analytics.export import export_customers
from crm_pipeline.analytics.metrics import changed_customer_ids, compute_metrics
from crm_pipeline.analytics.scores import write_scores
from crm_pipeline.analytics.search import SearchError, SearchPage, render_table, search
from crm_pipeline.analytics.segments import refresh_segments
from crm_pipeline.analytics.stats import read_stats, segment_distribution

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
