"""Receiver settings: one pydantic-settings class read from the environment (docs/reference.md, 1).

The signing secrets keep their contract names (SHOPIFY_WEBHOOK_SECRET, ...); the tuning knobs are
prefixed CRM_WEBHOOK_. Outside demo mode a missing or placeholder secret stops the start: a
receiver that accepts unsigned traffic would let anyone write into the customer pipeline.
"""

from __future__ import annotations

import logging

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

# Fixed, public secrets for `crm-pipeline demo` and local experiments only.
DEMO_SECRETS = {
    "shopify_webhook_secret": "demo-shopify-webhook-secret",
    "klaviyo_webhook_secret": "demo-klaviyo-webhook-secret",
    "admin_webhook_secret": "demo-admin-webhook-secret",
}
_PLACEHOLDERS = {
    "",
    "changeme",
    "changethis",
    "change-me",
    "secret",
    "placeholder",
    "todo",
    "xxx",
    "none",
    "null",
    *DEMO_SECRETS.values(),
}
_MIN_SECRET_LENGTH = 8


class SettingsError(ValueError):
    """The receiver's configuration is unusable (missing or placeholder secret)."""


def _env(name: str, *more: str) -> AliasChoices:
    return AliasChoices(name, *more)


class WebhookSettings(BaseSettings):
    """Everything the receiver needs; build it once per process."""

    model_config = SettingsConfigDict(
        populate_by_name=True, extra="ignore", case_sensitive=False, frozen=False
    )

    shopify_webhook_secret: SecretStr | None = Field(
        None, validation_alias=_env("SHOPIFY_WEBHOOK_SECRET", "shopify_webhook_secret")
    )
    klaviyo_webhook_secret: SecretStr | None = Field(
        None, validation_alias=_env("KLAVIYO_WEBHOOK_SECRET", "klaviyo_webhook_secret")
    )
    admin_webhook_secret: SecretStr | None = Field(
        None, validation_alias=_env("ADMIN_WEBHOOK_SECRET", "admin_webhook_secret")
    )
    demo: bool = Field(False, validation_alias=_env("CRM_DEMO", "demo"))

    database_url: str | None = Field(
        None, validation_alias=_env("CRM_DATABASE_URL", "database_url")
    )
    # Shopify gives up on a delivery after 5 s; every DB wait stays well below that.
    db_timeout_seconds: float = Field(
        2.0, gt=0, le=4.5, validation_alias=_env("CRM_WEBHOOK_DB_TIMEOUT", "db_timeout_seconds")
    )
    max_body_bytes: int = Field(
        1024 * 1024, gt=0, validation_alias=_env("CRM_WEBHOOK_MAX_BODY_BYTES", "max_body_bytes")
    )
    klaviyo_tolerance_seconds: int = Field(
        300,
        gt=0,
        validation_alias=_env("CRM_WEBHOOK_KLAVIYO_TOLERANCE", "klaviyo_tolerance_seconds"),
    )
    # `limits` notation ("2000/second", "100/minute"); empty disables. Counted per process.
    rate_limit_per_source: str = Field(
        "5000/second",
        validation_alias=_env("CRM_WEBHOOK_RATE_LIMIT_SOURCE", "rate_limit_per_source"),
    )
    rate_limit_per_shop: str = Field(
        "1000/second", validation_alias=_env("CRM_WEBHOOK_RATE_LIMIT_SHOP", "rate_limit_per_shop")
    )
    # Group commit: a writer takes up to batch_max queued rows, waiting at most batch_wait_ms.
    batch_max: int = Field(500, gt=0, validation_alias=_env("CRM_WEBHOOK_BATCH_MAX", "batch_max"))
    batch_wait_ms: float = Field(
        1.0, ge=0, validation_alias=_env("CRM_WEBHOOK_BATCH_WAIT_MS", "batch_wait_ms")
    )
    writer_connections: int = Field(
        2, ge=1, le=16, validation_alias=_env("CRM_WEBHOOK_WRITERS", "writer_connections")
    )

    @model_validator(mode="after")
    def _require_real_secrets(self) -> WebhookSettings:
        if self.demo:
            used = []
            for name, value in DEMO_SECRETS.items():
                if getattr(self, name) is None:
                    setattr(self, name, SecretStr(value))
                    used.append(name)
            if used:
                log.warning("demo mode: using fixed public demo secrets for %s", ", ".join(used))
            return self
        problems = []
        for name in DEMO_SECRETS:
            secret = getattr(self, name)
            value = secret.get_secret_value() if secret is not None else ""
            if value.strip().lower() in _PLACEHOLDERS or len(value) < _MIN_SECRET_LENGTH:
                problems.append(name.upper())
        if problems:
            raise SettingsError(
                f"missing or placeholder webhook secret(s): {', '.join(problems)}; set real "
                "values (at least 8 characters) or run in demo mode (CRM_DEMO=1)"
            )
        return self

    def secret(self, name: str) -> bytes:
        """The secret `name` ('shopify', 'klaviyo', 'admin') as bytes for HMAC."""
        value: SecretStr | None = getattr(self, f"{name}_webhook_secret")
        assert value is not None  # guaranteed by the validator
        return value.get_secret_value().encode()

    def dsn(self) -> str:
        """The libpq DSN: CRM_DATABASE_URL, else the embedded server (started if needed)."""
        from crm_pipeline.db.engine import libpq_dsn
        from crm_pipeline.db.server import database_dsn

        return libpq_dsn(self.database_url) if self.database_url else database_dsn(start=True)
