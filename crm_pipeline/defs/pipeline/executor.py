"""How full_refresh and incremental_sync run their steps, chosen per run in the run config.

Both jobs take Dagster's `multi_or_in_process_executor`. By default (`IN_PROCESS`) every step runs
in the run's own process, one after another: no interpreter start per step. `OVERLAP` (run config
`execution: {config: {multiprocess: ...}}`, see docs/loading.md) gives each step its own process
so the Shopify orders pull and the Klaviyo pulls, which mostly wait on their APIs' rate limits, run
side by side, while the steps tagged `crm/resource: cpu` (identity, analytics, mirror) run one at
a time so they do not starve each other on a small machine (2 cores). The asset graph still orders
the steps: klaviyo_profiles after shopify_customers, unified_customers after every pull it reads.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

RESOURCE_TAG = "crm/resource"
# op_tags of the assets that mostly wait on a remote API (the pulls)
API_BOUND = {RESOURCE_TAG: "api"}
# op_tags of the assets that keep a core busy (identity, analytics, mirror)
CPU_BOUND = {RESOURCE_TAG: "cpu"}

# the two pull branches (Shopify orders, Klaviyo profiles then events) plus one more step
MAX_CONCURRENT_STEPS = 3
CPU_STEPS_AT_ONCE = 1

IN_PROCESS: dict[str, Any] = {"in_process": {}}
OVERLAP: dict[str, Any] = {
    "multiprocess": {
        "max_concurrent": MAX_CONCURRENT_STEPS,
        "tag_concurrency_limits": [
            {"key": RESOURCE_TAG, "value": "cpu", "limit": CPU_STEPS_AT_ONCE},
        ],
    }
}

pipeline_executor = dg.multi_or_in_process_executor


def execution_config(overlap: bool) -> dict[str, Any]:
    """The run config's `execution` section for one mode or the other."""
    return {"config": OVERLAP if overlap else IN_PROCESS}
