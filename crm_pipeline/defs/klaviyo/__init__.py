"""Klaviyo domain: the resource that hands assets a configured `KlaviyoClient`."""
