"""Webhooks domain: the asset that drains webhook_events, its dead-letter check, job and sensor."""
