"""Operations routes (docs/reference.md, routes): liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from webhook_receiver.answers import json_response
from webhook_receiver.deps import ReceiverDep
from webhook_receiver.landing import DatabaseUnavailable

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Database unreachable."}})
async def readyz(receiver: ReceiverDep) -> Response:
    """Readiness: the database answers within the timeout."""
    try:
        await receiver.lander.ping()
    except DatabaseUnavailable:
        return json_response(503, {"status": "unavailable", "database": "unreachable"})
    return json_response(200, {"status": "ready", "database": "ok"})


@router.get("/metrics")
async def metrics(receiver: ReceiverDep) -> Response:
    """Prometheus text exposition."""
    return Response(receiver.metrics.render(), media_type=receiver.metrics.content_type)
