"""The receiver's routers, one module per concern (as the FastAPI full-stack template's
`api/routes/`): webhooks (the POSTs and their ASGI fast path), admin (an action's state),
ops (health, readiness, metrics). `api_router` gathers them for `main.create_app`."""

from __future__ import annotations

from fastapi import APIRouter

from webhook_receiver.routes import admin, ops, webhooks

api_router = APIRouter()
api_router.include_router(webhooks.router)
api_router.include_router(admin.router)
api_router.include_router(ops.router)
