"""The receiver's layout: routes get the Receiver only through deps.ReceiverDep, and webhook
POSTs still take the ASGI fast path around FastAPI's middleware (the benchmarked one)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from crm_pipeline_tests.webhooks.conftest import make_settings
from crm_pipeline_tests.webhooks.helpers import shopify_request
from webhook_receiver.deps import ReceiverDep, get_receiver
from webhook_receiver.main import ReceiverApp, create_app

PACKAGE = Path(__file__).resolve().parents[2] / "webhook_receiver"
NO_DATABASE = "postgresql://nobody@127.0.0.1:1/none"  # never connected: no lifespan runs


def _is_app(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "app") or (
        isinstance(node, ast.Attribute) and node.attr == "app"
    )


def _state_uses(tree: ast.AST) -> tuple[int, int]:
    """(reads, writes) of `app.state` / `<x>.app.state`; anything but an assignment is a read."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    reads = writes = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "state" and _is_app(node.value):
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute) and isinstance(parent.ctx, ast.Store):
                writes += 1
            else:
                reads += 1
    return reads, writes


def test_only_deps_reads_app_state() -> None:
    uses = {
        str(path.relative_to(PACKAGE)): _state_uses(ast.parse(path.read_text()))
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    readers = {name for name, (reads, _) in uses.items() if reads}
    writers = {name for name, (_, writes) in uses.items() if writes}
    assert readers == {"deps.py"}, readers
    assert writers == {"main.py"}, writers


def test_receiver_dep_gives_the_apps_receiver() -> None:
    app = create_app(make_settings(NO_DATABASE))
    request = Request({"type": "http", "app": app, "headers": []})
    assert get_receiver(request) is app.receiver


def test_receiver_dep_without_create_app_is_a_clear_error() -> None:
    app = FastAPI()

    @app.get("/probe")
    async def probe(receiver: ReceiverDep) -> dict[str, str]:
        return {"source": type(receiver).__name__}

    with pytest.raises(RuntimeError, match="create_app"):
        TestClient(app).get("/probe")


def test_webhook_posts_bypass_fastapi_other_routes_do_not() -> None:
    app: ReceiverApp = create_app(make_settings(NO_DATABASE))
    seen: list[str] = []

    @app.middleware("http")
    async def record(request: Request, call_next):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
        seen.append(f"{request.method} {request.url.path}")
        return await call_next(request)

    client = TestClient(app)
    body, headers = shopify_request({"id": 1}, secret="not-the-right-secret")
    assert client.post("/webhooks/shopify", content=body, headers=headers).status_code == 401
    assert client.get("/healthz").status_code == 200
    assert seen == ["GET /healthz"]
