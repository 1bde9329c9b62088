"""The FastAPI application: routers, problem handlers, middleware, operations endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

import mailconnect
from mailconnect.service.middleware import BodyLimit, RequestContext
from mailconnect.service.problems import install_handlers, problem_response
from mailconnect.service.routes import connections, discovery, messages, tenants, webhooks
from mailconnect.service.runtime import Runtime

__all__ = ["create_app"]

DESCRIPTION = """\
Send e-mail through each customer company's own mail server.

Authenticate with `Authorization: Bearer <key>`: a tenant's API key (scopes `send`, `manage`) or,
for `/v1/tenants`, the operator token. Every error is an RFC 9457 problem
(`application/problem+json`) whose `errors[].field` names the field. See docs/api.md.
"""


def create_app(runtime: Runtime, *, background: bool = True) -> FastAPI:
    """The app for ``runtime``; ``background`` runs the worker and webhooks while it is up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        demo = runtime.demo
        if demo is not None:
            await demo.start()
        try:
            if background:
                async with runtime.background():
                    yield
            else:
                yield
        finally:
            if demo is not None:
                await demo.stop()

    version = getattr(mailconnect, "__version__", "0.1.0")
    app = FastAPI(
        title="mailconnect",
        version=str(version),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    install_handlers(app)
    app.include_router(tenants.router)
    app.include_router(connections.router)
    app.include_router(discovery.router)
    app.include_router(messages.router)
    app.include_router(webhooks.router)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        responses={503: {"description": "Not ready (problem+json)"}},
    )
    async def readyz(request: Request) -> Any:
        """Readiness: the database answers and its schema is current."""
        ready, reason = await run_in_threadpool(runtime.ready)
        if not ready:
            return problem_response(request, "unavailable", reason)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics (text format)."""
        body = await run_in_threadpool(generate_latest, runtime.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    if runtime.demo is not None:
        runtime.demo.install(app)

    app.add_middleware(BodyLimit, limit=runtime.settings.max_body_bytes)
    app.add_middleware(RequestContext, metrics=runtime.metrics)
    return app
