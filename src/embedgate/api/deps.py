"""Typed dependency aliases for routes.

Every dependency is `async def`: FastAPI runs plain `def` dependencies in its threadpool,
which on the hot path costs a thread hop per request and GIL contention with inference.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from embedgate.api.context import RequestContext
from embedgate.embeddings.service import EmbeddingService
from embedgate.engine.registry import ModelRegistry
from embedgate.limits.admission import Admission, Limits
from embedgate.rerank.service import RerankService
from embedgate.runtime import Runtime
from embedgate.tenancy.auth import Caller, CallerDenied, invalid_api_key
from embedgate.tenancy.keys import Scope
from embedgate.tenancy.sessions import CSRF_HEADER, SESSION_COOKIE


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_embeddings(request: Request) -> EmbeddingService:
    return (await get_runtime(request)).embeddings  # one dependency level on the hot path


async def get_rerank(request: Request) -> RerankService:
    return (await get_runtime(request)).rerank


async def get_registry(request: Request) -> ModelRegistry:
    return (await get_runtime(request)).registry


EmbeddingsDep = Annotated[EmbeddingService, Depends(get_embeddings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
RerankDep = Annotated[RerankService, Depends(get_rerank)]


async def get_context(request: Request) -> RequestContext:
    return RequestContext.of(request)


ContextDep = Annotated[RequestContext, Depends(get_context)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def session_token(request: Request) -> str | None:
    """The web console's session cookie, read only when no Authorization header is sent:
    API clients are never affected by a cookie."""
    if "authorization" in request.headers:
        return None
    return request.cookies.get(SESSION_COOKIE) or None


async def require_admin(request: Request) -> None:
    """The admin key, or an admin console session (whose unsafe requests need CSRF)."""
    runtime = await get_runtime(request)
    session = session_token(request)
    if session is not None:
        await runtime.sessions.admin(session, request.method, request.headers.get(CSRF_HEADER))
        return
    runtime.control.auth.throttle.check(client_ip(request))  # before the key: no oracle
    token = bearer_token(request) or ""
    if not hmac.compare_digest(token.encode(), runtime.admin_key.encode()):
        await runtime.control.auth.failed(token, client_ip(request))
        raise invalid_api_key()


AdminDep = Annotated[None, Depends(require_admin)]


PROXY_SECRET_HEADER = "x-embedgate-proxy-secret"  # noqa: S105 - a header name


async def authenticate(request: Request) -> Caller:
    """The calling tenant, from its key alone (or a console session, which stands for its
    key); X-Tenant-ID is read only from a trusted gateway (its shared secret, from its
    networks). On an admitted route (api/admission.py) it was found before the body was
    read: that caller, not a second lookup."""
    context = RequestContext.of(request)
    if context.admitted is not None:
        return context.admitted
    runtime = await get_runtime(request)
    auth = runtime.control.auth
    proxy_secret = request.headers.get(PROXY_SECRET_HEADER)
    try:
        if proxy_secret is not None or session_token(request) is None:
            auth.throttle.check(client_ip(request))  # a key or secret: not from a guesser
        if proxy_secret is not None:
            tenant_id = request.headers.get("x-tenant-id")
            caller = await auth.from_proxy(proxy_secret, tenant_id, client_ip(request))
        elif (session := session_token(request)) is not None:
            csrf = request.headers.get(CSRF_HEADER)
            context.console = True
            caller = await runtime.sessions.caller(
                session, request.method, csrf, client_ip(request)
            )
        else:
            caller = await auth.authenticate(bearer_token(request), client_ip(request))
    except CallerDenied as denied:
        context.identify(denied.caller)
        raise
    context.identify(caller)
    return caller


@dataclass(frozen=True, slots=True)
class RequiresScope:
    """A dependency: the calling tenant, whose key must have ``scope`` (else 403). A class,
    so that the admitting route can see which scope to check before admission."""

    scope: Scope

    async def __call__(self, request: Request) -> Caller:
        caller = await authenticate(request)
        caller.require(self.scope)
        return caller


def with_scope(scope: Scope) -> Callable[[Request], Awaitable[Caller]]:
    return RequiresScope(scope)


async def admit(
    request: Request, scope: Scope | None, *, spends_tokens: bool
) -> tuple[Limits, Admission]:
    """Phase 1 of admission, before the body is read: the caller, its key's scope, one
    request and a concurrency lease. The admission's x-ratelimit-* headers go on the
    response (phase 2, once tokens are counted, updates them)."""
    caller = await authenticate(request)
    if scope is not None:
        caller.require(scope)
    limits = (await get_runtime(request)).limits
    admission = await limits.admit_request(caller, spends_tokens=spends_tokens)
    # Without headers, the response gets the tenant's current state (api/middleware.py).
    RequestContext.of(request).admit(caller, admission.headers)
    return limits, admission


CallerDep = Annotated[Caller, Depends(authenticate)]
EmbeddingsCallerDep = Annotated[Caller, Depends(with_scope("embeddings"))]
