"""GET /health (liveness + readiness, no auth; live detail with the admin key), GET /metrics
(Prometheus, admin key) and GET /admin/system (the admin console's status panel)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from embedgate import __version__
from embedgate.api.deps import AdminDep, RuntimeDep, bearer_token, require_admin
from embedgate.embeddings.cache import EmbeddingCache
from embedgate.engine.backends.devices import gpu_memory, gpu_name
from embedgate.engine.backends.upstream import UpstreamBackend
from embedgate.engine.registry import ServedModel
from embedgate.runtime import Runtime
from embedgate.tenancy.auth import presented_prefix

router = APIRouter(tags=["system"])
log = logging.getLogger("embedgate.health")
HEALTH_TIMEOUT_S = 2.0


@router.get("/health")
async def health(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Readiness for anyone; queue depths, backends and errors only for the admin key."""
    full = await _admin_asks(request)
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
    return JSONResponse(body if full else _public(body), status_code=200 if status else 503)


async def _admin_asks(request: Request) -> bool:
    """A bearer token that is not a tenant key's is taken as the admin key: checked (and a
    wrong one counted and throttled) like any admin call, so /health is no free oracle.
    Probes send no key; a tenant's key just gets the public readiness."""
    token = bearer_token(request)
    if token is None or presented_prefix(token) is not None:
        return False
    await require_admin(request)
    return True


def _public(body: dict[str, Any]) -> dict[str, Any]:
    """Status and one ``ready`` per component: nothing live, no backend, no error text."""
    public = {
        "status": body["status"], "version": body["version"],
        "models": {name: {"ready": bool(m["ready"])} for name, m in body["models"].items()},
        **{part: {"ready": bool(body[part]["ready"])}
           for part in ("database", "rate_limits", "search")},
    }  # fmt: skip
    if "reserved_models" in body:
        public["reserved_models"] = body["reserved_models"]
    return public


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


@router.get("/admin/system")
async def system_status(runtime: RuntimeDep, _: AdminDep) -> dict[str, Any]:
    """Every model (reserved ones named: this is the operator), the device and its memory,
    queues, the embedding cache and uptime."""
    models = [_model_status(model) for model in runtime.registry.all()]
    return {
        "object": "system",
        "version": __version__,
        "uptime_s": round(time.monotonic() - runtime.started, 1),
        "models": models,
        "device": _device_status([m["device"] for m in models if m["device"]]),
        "queue_depth": sum(m["queue_depth"] for m in models),
        "cache": _cache_status(runtime.cache),
        "tenants": await runtime.control.store.tenants.count(),
        "database": {"backend": runtime.control.store.backend},
        "rate_limits": runtime.limits.health(),
        "scheduling": runtime.settings.scheduling,
    }


def _model_status(model: ServedModel) -> dict[str, Any]:
    health = model.backend.health()
    status = {
        "name": model.name, "backend": health["backend"], "device": health.get("device"),
        "dtype": health.get("dtype"), "dimensions": model.dimensions,
        "max_tokens": model.max_tokens, "ready": bool(health["ready"]),
        "queue_depth": model.scheduler.queue_depth, "aliases": list(model.spec.aliases),
        "reserved_for": model.spec.tenants,
    }  # fmt: skip
    if "upstreams" in health:
        status["upstreams"] = health["upstreams"]
    if isinstance(model.backend, UpstreamBackend):
        status["endpoints"] = model.backend.pool.status()
    return status


def _device_status(devices: list[str]) -> dict[str, Any]:
    """The first local model's device (``none`` when every model is upstream); GPU memory
    only where it is CUDA."""
    if not devices:
        return {"type": "none", "id": None, "name": None, "gpu_memory": None}
    device = devices[0]
    if not device.startswith("cuda"):
        return {"type": device.partition(":")[0], "id": device, "name": None, "gpu_memory": None}
    memory = {
        name.replace("_bytes", "_mb"): round(value / 2**20, 1)
        for name, value in gpu_memory(device).items()
    }
    return {"type": "cuda", "id": device, "name": gpu_name(device), "gpu_memory": memory}


def _cache_status(cache: EmbeddingCache) -> dict[str, Any]:
    return {
        "enabled": cache.enabled, "entries": len(cache), "bytes": cache.bytes,
        "max_bytes": cache.max_bytes, "hits": cache.hits, "misses": cache.misses,
        "hit_ratio": round(cache.hit_ratio(), 4),
    }  # fmt: skip
