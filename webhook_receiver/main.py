"""Builds the receiver app (`create_app`) and runs it under uvicorn (`run`, used by the CLI).

The factory wires the shared `Receiver` (receiver.py) and the routers (routes/); FastAPI routes
reach the receiver through `deps.ReceiverDep`, the webhook POSTs through `ReceiverApp.receiver`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from webhook_receiver.asgi import Receive, Scope, Send
from webhook_receiver.landing import Lander
from webhook_receiver.metrics import ReceiverMetrics
from webhook_receiver.ratelimit import RateLimiter
from webhook_receiver.receiver import Receiver
from webhook_receiver.routes import api_router
from webhook_receiver.routes.webhooks import WEBHOOK_ROUTES, serve_delivery
from webhook_receiver.settings import WebhookSettings
from webhook_receiver.status import ActionStatus

log = logging.getLogger(__name__)


class ReceiverApp(FastAPI):
    """FastAPI for the docs, health, readiness and metrics; webhook POSTs go straight to
    `serve_delivery`, skipping the middleware stack, routing and endpoint wrapping (which cost
    more CPU per delivery than verifying and landing it). Everything else is plain FastAPI."""

    receiver: Receiver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root) :]
            route = WEBHOOK_ROUTES.get(path)
            if route is not None:
                try:
                    await serve_delivery(self.receiver, route, scope, receive, send)
                except Exception:
                    # What Starlette's ServerErrorMiddleware would do: log; the server answers
                    # 500 if nothing was sent yet. Never a 2xx: landing had not succeeded.
                    log.exception("webhook %s: unexpected error", path)
                    raise
                return
        await super().__call__(scope, receive, send)


def create_app(settings: WebhookSettings | None = None) -> ReceiverApp:
    """The FastAPI app; settings come from the environment unless given (tests, bench)."""
    settings = settings or WebhookSettings()
    metrics = ReceiverMetrics()
    dsn = settings.dsn()
    lander = Lander(
        dsn,
        writers=settings.writer_connections,
        batch_max=settings.batch_max,
        batch_wait_ms=settings.batch_wait_ms,
        timeout_seconds=settings.db_timeout_seconds,
        on_batch=metrics.batch_size.observe,
    )
    limiter = RateLimiter(
        dsn,
        settings.rate_limit_per_source,
        settings.rate_limit_per_shop,
        timeout_seconds=settings.db_timeout_seconds,
    )
    receiver = Receiver(
        settings=settings,
        lander=lander,
        limiter=limiter,
        metrics=metrics,
        statuses=ActionStatus(dsn, settings.db_timeout_seconds),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await lander.start()
        await limiter.start()
        try:
            yield
        finally:
            await limiter.stop()
            await lander.stop()

    app = ReceiverApp(
        title="crm-pipeline webhook receiver",
        summary="Verifies webhook signatures and lands deliveries durably in webhook_events.",
        version="1.0",
        lifespan=lifespan,
    )
    app.state.receiver = receiver
    app.receiver = receiver
    app.include_router(api_router)
    return app


def create_app_from_env() -> ReceiverApp:
    """Factory for uvicorn workers (each worker process builds its own app and writer)."""
    return create_app(WebhookSettings())


def run(port: int, host: str = "127.0.0.1", workers: int = 1, demo: bool = False) -> None:
    """Serve the receiver until interrupted; refuses to start without real secrets unless demo."""
    import uvicorn

    if demo:
        os.environ["CRM_DEMO"] = "1"
    settings = WebhookSettings()  # fail here, before forking workers, on bad configuration
    if not settings.database_url:
        # Start the embedded server once in the parent and hand its DSN to the workers.
        os.environ["CRM_DATABASE_URL"] = settings.dsn()
    log.info("webhook receiver on http://%s:%d (%d worker(s))", host, port, workers)
    uvicorn.run(
        "webhook_receiver.main:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",  # both come with uvicorn[standard]; named so a missing one fails loudly
        http="httptools",
        access_log=False,
        log_level="info",
    )
