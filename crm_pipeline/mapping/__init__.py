"""One mapping per source shape: raw records (API, webhook, file) to our record types.

Pulls, webhooks and file imports all go through these functions, so a field is interpreted the
same way whichever door it came in by.
"""

from crm_pipeline.mapping.records import (
    ActivityRecord,
    CustomerRecord,
    LineItemRecord,
    OrderRecord,
)

__all__ = ["ActivityRecord", "CustomerRecord", "LineItemRecord", "OrderRecord"]
