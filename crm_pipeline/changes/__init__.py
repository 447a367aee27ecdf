"""Incremental runs cost what changed: the customer change log and what consumes it.

Triggers (sql/0015_customer_changes.sql) record, in the writing transaction, every customer a
pull, webhook, staff action, import, merge, delete or redaction touched. The refresh stages
(`refresh`) recompute metrics, segments and the Firestore mirror for those customers only, each
stage reading up to the horizon of the stage before it (`log`). docs/metrics.md#incremental-runs.
"""
