"""``create_app(settings)`` builds the whole server; nothing heavy happens at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from embedgate import __version__
from embedgate.api import (
    admin,
    collections,
    console,
    console_pages,
    embeddings,
    me,
    models,
    rerank,
    system,
)
from embedgate.api.error_handlers import install_error_handlers
from embedgate.api.middleware import BodyLimitMiddleware, ObservabilityMiddleware
from embedgate.config.settings import Settings
from embedgate.observability.metrics import Metrics
from embedgate.runtime import Runtime


def create_app(
    settings: Settings | None = None, *, on_started: Callable[[], None] | None = None
) -> FastAPI:
    """The app; ``on_started`` runs once its runtime (models, stores) is up."""
    settings = settings or Settings()
    metrics = Metrics(settings.metrics_tenant_labels)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start(settings, metrics)
        app.state.runtime = runtime
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            await runtime.aclose()

    app = FastAPI(
        title="embedgate",
        version=__version__,
        summary="Many tenants, one embedding model, an OpenAI-compatible API.",
        lifespan=lifespan,
        # Metrics are embedgate's own Prometheus series; FastAPI's built-in OpenTelemetry
        # hooks would only add a per-request provider check on the hot path.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)  # outermost
    app.include_router(system.router)
    app.include_router(embeddings.router)
    app.include_router(models.router)
    app.include_router(rerank.router)
    app.include_router(me.router)
    app.include_router(collections.router)
    app.include_router(admin.router)
    app.include_router(console.router)
    console_pages.install(app)  # the web console: / and /static
    return app
