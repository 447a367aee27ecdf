"""Applying webhook deliveries (Shopify, Klaviyo, admin actions) from the webhook_events queue.

`process_pending` drains the queue, `replay` re-queues failed/dead deliveries; see
docs/webhook-processing.md.
"""

from crm_pipeline.webhooks.processor import ProcessReport, process_pending
from crm_pipeline.webhooks.queue import QueueStats, RetryPolicy, queue_stats, replay

__all__ = ["ProcessReport", "QueueStats", "RetryPolicy", "process_pending", "queue_stats", "replay"]
