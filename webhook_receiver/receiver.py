"""`Receiver`: what every route shares (settings, landing writer, limiter, metrics, statuses).

One instance per app, built by `main.create_app`; the ASGI fast path gets it from the app and
FastAPI routes through `deps.ReceiverDep`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from webhook_receiver.landing import Lander
from webhook_receiver.metrics import ReceiverMetrics
from webhook_receiver.ratelimit import RateLimiter
from webhook_receiver.settings import WebhookSettings
from webhook_receiver.status import ActionStatus


@dataclass
class Receiver:
    """What the routes share: settings, landing writer, rate limiter, metrics."""

    settings: WebhookSettings
    lander: Lander
    limiter: RateLimiter
    metrics: ReceiverMetrics
    statuses: ActionStatus
    # Secrets as bytes, read once: pydantic's SecretStr unwrapping is not free per request.
    secrets: dict[str, bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.secrets = {
            name: self.settings.secret(name) for name in ("shopify", "klaviyo", "admin")
        }
