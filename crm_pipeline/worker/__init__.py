"""`crm-pipeline worker`: apply landed webhook deliveries continuously, in about a second.

The process_webhooks job waits for a sensor tick and a run launch (seconds) before it applies a
batch; the worker listens for landings (PostgreSQL LISTEN/NOTIFY) and applies them with the same
processing code, beside the sensor's runs. See docs/webhook-processing.md.

Modules: `loop` (the Worker), `wakeup` (LISTEN with a poll fallback), `action_documents`
(admin_actions/{action_id}), `dagster_events` (runless materializations for the UI), `command`
(what the CLI runs). The refresh of what deliveries touched is crm_pipeline.changes.refresh.
"""
