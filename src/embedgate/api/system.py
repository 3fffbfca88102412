"""GET /health (liveness + readiness, no auth) and GET /metrics (Prometheus, admin key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from embedgate import __version__
from embedgate.api.deps import AdminDep, RuntimeDep

router = APIRouter(tags=["system"])


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
    ready = bool(models) and all(entry["ready"] for entry in models.values())
    body = {"status": "ok" if ready else "unavailable", "version": __version__, "models": models}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(runtime: RuntimeDep, _: AdminDep) -> Response:
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
