"""GET /health (liveness + readiness, no auth) and GET /metrics (Prometheus, admin key)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from embedgate import __version__
from embedgate.api.deps import AdminDep, RuntimeDep
from embedgate.runtime import Runtime

router = APIRouter(tags=["system"])
log = logging.getLogger("embedgate.health")
HEALTH_TIMEOUT_S = 2.0


@router.get("/health")
async def health(runtime: RuntimeDep) -> JSONResponse:
    models: dict[str, Any] = {}
    for model in runtime.registry.all():
        models[model.name] = {
            **model.backend.health(),
            "dimensions": model.dimensions,
            "max_tokens": model.max_tokens,
            "queue_depth": model.scheduler.queue_depth,
        }
    database = {"backend": runtime.control.store.backend, "ready": await _database_up(runtime)}
    ready = database["ready"] and bool(models) and all(m["ready"] for m in models.values())
    body = {
        "status": "ok" if ready else "unavailable",
        "version": __version__,
        "models": models,
        "database": database,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


async def _database_up(runtime: Runtime) -> bool:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            await runtime.control.store.ping()
    except Exception:  # any failure means "not ready"; the cause is logged, not shown
        log.warning("database ping failed", exc_info=True)
        return False
    return True


@router.get("/metrics")
async def metrics(runtime: RuntimeDep, _: AdminDep) -> Response:
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
