"""The webhooks domain's definitions; the `postgres` resource is bound centrally."""

from __future__ import annotations

import dagster as dg

from crm_pipeline.defs.webhooks.assets import webhook_deliveries
from crm_pipeline.defs.webhooks.checks import webhook_deliveries_no_dead_letters
from crm_pipeline.defs.webhooks.sensors import process_webhooks, webhook_sensor

defs = dg.Definitions(
    assets=[webhook_deliveries],
    asset_checks=[webhook_deliveries_no_dead_letters],
    jobs=[process_webhooks],
    sensors=[webhook_sensor],
)
