"""Request ids, Prometheus series and one access-log line per request (pure ASGI).

The access log names method, route, status, latency, request id, tenant and key prefix:
never bodies, query strings or headers, so no input text or key can reach the logs. Who
called, what it used, its rate-limit headers and error code come from the request's
``RequestContext`` (api/context.py), which the dependencies, routes and error handlers
fill in.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedgate.api.context import RequestContext
from embedgate.errors import EmbedgateError
from embedgate.observability.metrics import Metrics
from embedgate.storage.faults import client_error, reason
from embedgate.storage.records import UsageRecord
from embedgate.tenancy.auth import Caller

access_log = logging.getLogger("embedgate.access")
log = logging.getLogger("embedgate.errors")


def route_label(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = RequestContext.in_scope(scope)
        request_id = context.request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers += await _rate_headers(scope, context, headers)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            error = _answer(scope, exc)
            if status:
                raise
            context.error_code = error.code
            await error.response()(scope, receive, send_with_id)
        finally:
            self._record(scope, context, status or 500, time.perf_counter() - started)

    def _record(self, scope: Scope, context: RequestContext, status: int, elapsed: float) -> None:
        route = route_label(scope)
        code = context.error_code
        self.metrics.requests.labels(route, str(status)).inc()
        self.metrics.latency.labels(route).observe(elapsed)
        if status >= 400:
            self.metrics.errors.labels(str(code or status)).inc()
        caller = context.caller
        if caller is not None:
            self.metrics.record_tenant(caller.tenant.id, status, elapsed, context.tokens,
                                       code)  # fmt: skip
            _meter(scope, caller, route, status, elapsed, context, code)
        access_log.info(
            "%s %s %d %.1fms %s tenant=%s key=%s", scope["method"], route, status,
            elapsed * 1000, context.request_id, context.tenant_id, context.key_prefix,
        )  # fmt: skip


def _answer(scope: Scope, exc: Exception) -> EmbedgateError:
    """A storage failure (database down, disk full) is the client's 503/507 and one log
    line; anything else is a bug: its traceback (never the body) and a 500."""
    error = client_error(exc)
    if error is not None:
        log.warning("%s on %s %s: %s", error.code, scope["method"], route_label(scope),
                    reason(exc))  # fmt: skip
        return error
    log.error("unhandled error on %s %s", scope["method"], route_label(scope), exc_info=exc)
    return EmbedgateError(500, "Internal server error.", code="internal_error")


async def _rate_headers(
    scope: Scope, context: RequestContext, present: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The x-ratelimit-* headers on every /v1 response of a known tenant: those of its
    admission where the route took from its limits, else its current state."""
    rate, caller = context.rate_headers, context.caller
    if rate is None and caller is not None and scope["path"].startswith("/v1/"):
        runtime = getattr(scope["app"].state, "runtime", None)
        rate = await runtime.limits.peek(caller) if runtime is not None else None
    names = {name.lower() for name, _ in present}
    return [
        (name.encode(), value.encode())
        for name, value in (rate or {}).items()
        if name.encode() not in names
    ]


def _meter(
    scope: Scope, caller: Caller, route: str, status: int, elapsed: float,
    context: RequestContext, code: str | None,
) -> None:  # fmt: skip
    """One usage record per tenant request (never its content), one more per stage of a
    successful request (a search's rerank), and denials to the audit. A console session's
    GET requests are the console drawing its pages (the tenant's own keys, collections,
    usage): they count against its limits, but make no usage record."""
    runtime = getattr(scope["app"].state, "runtime", None)
    if runtime is None:
        return
    ok, at = status < 400, datetime.now(UTC)
    if not (context.console and scope["method"] == "GET"):
        stages = context.stages if ok else []  # a failed request is one error, not more
        for where, usage in [(route, context.usage), *((f"{route}/{n}", u) for n, u in stages)]:
            runtime.control.usage.record(UsageRecord(
                tenant_id=caller.tenant.id, key_id=caller.key.id, model=usage.model,
                route=where, inputs=usage.inputs if ok else 0,
                tokens=usage.tokens if ok else 0, dimensions=usage.dimensions,
                status=status, latency_ms=round(elapsed * 1000, 3), at=at,
                tenant_uid=caller.tenant.uid,
            ))  # fmt: skip
    if status in (403, 429) and code:
        client = scope.get("client")
        runtime.denials.note(
            status, code, tenant_id=caller.tenant.id, key_prefix=caller.key.prefix,
            client_ip=client[0] if client else None, route=route,
        )  # fmt: skip


class BodyLimitMiddleware:
    """Bodies over ``limit`` bytes get 413: at once when Content-Length says so, else as soon
    as the streamed body passes the limit (the error surfaces where the route reads it)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def error(self) -> EmbedgateError:
        return EmbedgateError(
            413,
            f"The request body is larger than this server accepts ({self.limit} bytes).",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > self.limit:
            RequestContext.in_scope(scope).error_code = "request_too_large"
            await self.error().response()(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise self.error()
            return message

        await self.app(scope, limited_receive, send)
