"""The activation domain: what the CRM computes, pushed to Klaviyo where marketing acts on it."""
