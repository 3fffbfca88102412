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
    reserved_ready: list[bool] = []
    for model in runtime.registry.all():
        state = {
            **model.backend.health(),
            "dimensions": model.dimensions,
            "max_tokens": model.max_tokens,
            "queue_depth": model.scheduler.queue_depth,
        }
        if model.spec.tenants is None:
            models[model.name] = state
        else:  # a reserved model's name is its tenants' business: counted, not named
            reserved_ready.append(bool(state["ready"]))
    database = {"backend": runtime.control.store.backend, "ready": await _database_up(runtime)}
    limits = await _limits_state(runtime)
    search = await runtime.stores.health()
    ready = (
        database["ready"]
        and (bool(models) or bool(reserved_ready))
        and all(m["ready"] for m in models.values())
        and all(reserved_ready)
    )
    limits_ok = limits["ready"] or limits["failure_mode"] == "open"
    healthy = limits["ready"] and search["ready"]
    status = "ok" if ready and healthy else "degraded" if ready and limits_ok else None
    body = {
        "status": status or "unavailable",
        "version": __version__,
        "models": models,
        "database": database,
        "rate_limits": limits,
        "search": search,
    }
    if reserved_ready:
        body["reserved_models"] = {"count": len(reserved_ready), "ready": sum(reserved_ready)}
    return JSONResponse(body, status_code=200 if status else 503)


async def _limits_state(runtime: Runtime) -> dict[str, Any]:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            await runtime.limits.ping()
    except TimeoutError:
        pass  # ping() records failures itself; a hang counts as down below
    return runtime.limits.health()


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
