"""What one request carries from the dependencies and routes to the middleware.

The dependencies (api/deps.py) name the caller and take its admission, the routes record
what they used, the error handlers the error code; the middleware (api/middleware.py)
reads it back to meter usage, count per-tenant metrics, add the x-ratelimit-* headers,
audit denials and write the access line. One object per request, under one key of the
ASGI scope's ``state`` (``request.state.context``), which the scope shares by reference
however the app copies the scope itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection
from starlette.types import Scope

from embedgate.tenancy.auth import Caller

STATE_KEY = "context"


def new_request_id() -> str:
    return f"req_{os.urandom(16).hex()}"  # as uuid4().hex: 32 hex digits, a quarter the cost


@dataclass(frozen=True, slots=True)
class Metered:
    """What a request used, for its usage record; inputs and tokens count only when it
    succeeds (api/middleware.py)."""

    model: str | None = None
    inputs: int = 0
    tokens: int = 0
    dimensions: int | None = None


@dataclass(slots=True, eq=False)
class RequestContext:
    request_id: str = field(default_factory=new_request_id)
    caller: Caller | None = None  # metered, per-tenant metrics, rate headers, denials audited
    admitted: Caller | None = None  # found before the body was read (api/admission.py)
    tenant_id: str = "-"  # for the access log
    key_prefix: str = "-"
    rate_headers: dict[str, str] | None = None  # else the tenant's current state is sent
    usage: Metered = Metered()
    # Work of another kind within the request (a search's rerank), each metered apart under
    # the route plus its name: (name, what it used).
    stages: list[tuple[str, Metered]] = field(default_factory=list)
    error_code: str | None = None  # of the error answered, for metrics and the audit
    console: bool = False  # the caller is a console session (its page reads go unmetered)

    @classmethod
    def of(cls, request: HTTPConnection) -> RequestContext:
        return cls.in_scope(request.scope)

    @classmethod
    def in_scope(cls, scope: Scope) -> RequestContext:
        """The request's context, made on first use (by the outermost middleware)."""
        state = scope.setdefault("state", {})
        context = state.get(STATE_KEY)
        if not isinstance(context, cls):
            context = state[STATE_KEY] = cls()
        return context

    def identify(self, caller: Caller) -> None:
        """The calling tenant: its request is metered, even when it is refused."""
        self.caller = caller
        self.tenant_id = caller.tenant.id
        self.key_prefix = caller.key.prefix

    def note(self, tenant_id: str | None, key_prefix: str | None) -> None:
        """Tenant and key prefix for the access log alone (a console session's)."""
        self.tenant_id = tenant_id or "-"
        self.key_prefix = key_prefix or "-"

    def admit(self, caller: Caller, rate_headers: dict[str, str]) -> None:
        self.admitted = caller
        self.rate_limit(rate_headers)

    def rate_limit(self, headers: dict[str, str]) -> None:
        """The x-ratelimit-* headers of what the request took, when it took anything."""
        if headers:
            self.rate_headers = headers

    def meter(self, model: str, inputs: int, tokens: int, dimensions: int | None) -> None:
        self.usage = Metered(model, inputs, tokens, dimensions)

    def meter_stage(self, name: str, model: str, inputs: int, tokens: int) -> None:
        """A stage's own usage record, route ``<route>/<name>`` (docs/metering.md)."""
        self.stages.append((name, Metered(model, inputs, tokens)))

    @property
    def tokens(self) -> int:
        """Every token the request used, its stages' included."""
        return self.usage.tokens + sum(used.tokens for _, used in self.stages)
