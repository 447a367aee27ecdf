"""Applying webhook deliveries (Shopify, Klaviyo, admin actions) from the webhook_events queue.

`process_pending` drains the queue, `replay` re-queues failed/dead deliveries; see
docs/webhook-processing.md. The names below are imported on first use: the receiver imports
the light `admin_schema` and `subjects` modules of this package and must not pull in the
processor (SQLAlchemy, the ingest loaders) with them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ProcessReport": "crm_pipeline.webhooks.processor",
    "process_pending": "crm_pipeline.webhooks.processor",
    "QueueStats": "crm_pipeline.webhooks.queue",
    "RetryPolicy": "crm_pipeline.webhooks.queue",
    "queue_stats": "crm_pipeline.webhooks.queue",
    "replay": "crm_pipeline.webhooks.queue",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
