"""Reverse sync to Klaviyo: CRM properties on profiles, `CRM: <segment>` lists, trigger events,
and consent coming back (docs/activation.md).

payloads: what a profile carries and its hash; plan: what a sync would write; sync: writing it;
client: the SDK calls; state: what was written, in PostgreSQL; settings: names and limits.
"""
