"""Typed dependency aliases for routes.

Every dependency is `async def`: FastAPI runs plain `def` dependencies in its threadpool,
which on the hot path costs a thread hop per request and GIL contention with inference.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from embedgate.errors import EmbedgateError
from embedgate.runtime import Runtime
from embedgate.services.embeddings import EmbeddingService
from embedgate.services.registry import ModelRegistry

INVALID_KEY = "Invalid API key"


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_embeddings(request: Request) -> EmbeddingService:
    return (await get_runtime(request)).embeddings  # one dependency level on the hot path


async def get_registry(request: Request) -> ModelRegistry:
    return (await get_runtime(request)).registry


EmbeddingsDep = Annotated[EmbeddingService, Depends(get_embeddings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def require_admin(request: Request, runtime: RuntimeDep) -> None:
    token = bearer_token(request) or ""
    if not hmac.compare_digest(token.encode(), runtime.admin_key.encode()):
        raise EmbedgateError(401, INVALID_KEY, code="invalid_api_key")


AdminDep = Annotated[None, Depends(require_admin)]
