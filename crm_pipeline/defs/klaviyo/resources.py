"""The Klaviyo resource: configuration bound from `KLAVIYO_*` env vars, a client per use."""

from __future__ import annotations

import dagster as dg

from crm_pipeline.env_binding import resolve
from crm_pipeline.sources.klaviyo import KlaviyoClient


class KlaviyoResource(dg.ConfigurableResource):
    """Private-key access to one Klaviyo account, or to the sandbox when `api_url` is set. Each
    setting is a value or an `env("NAME")` binding (crm_pipeline/env_binding.py)."""

    api_key: str | None = None
    api_url: str | None = None
    timeout: float = 30.0
    # "true"/"1"/"yes"/"on" (or an env binding to one): also pull Klaviyo's predictive_analytics
    # as their own stream. Off by default: asking for them puts every profile page under the
    # 150/min limit instead of 700/min, and our own models replace them (docs/predictive.md).
    predictive_analytics: str | None = None
    # "1" (or an env binding to it, KLAVIYO_SYNC_ENABLED): the activation assets may write to
    # Klaviyo; anything else and they only plan (crm_pipeline/activation, docs/activation.md)
    sync_enabled: str | None = None

    def writes_enabled(self) -> bool:
        """Whether the reverse sync may write to this account."""
        from crm_pipeline.activation.settings import sync_enabled

        return sync_enabled(resolve(self.sync_enabled))

    def wants_predictive(self) -> bool:
        """Whether the predictive stream is configured."""
        value = resolve(self.predictive_analytics)
        return (value or "").strip().lower() in {"1", "true", "yes", "on"}

    def get_client(self) -> KlaviyoClient:
        """A client for this account; fails with what to set when the key is missing."""
        api_key, api_url = resolve(self.api_key), resolve(self.api_url)
        if api_key:
            return KlaviyoClient(api_key, api_url=api_url, timeout=self.timeout)
        if api_url:
            # the sandbox only checks that a key is present
            return KlaviyoClient("pk_sandbox", api_url=api_url, timeout=self.timeout)
        raise dg.Failure(
            description=(
                "Klaviyo is not configured: set KLAVIYO_API_KEY to a private API key with "
                "profiles:read, events:read and metrics:read scopes, or KLAVIYO_API_URL to a "
                "sandbox started with `crm-pipeline sandbox serve`."
            )
        )
