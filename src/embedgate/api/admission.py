"""Admission before any work: every tenant route authenticates and takes from its limits
before a byte of the request body is read.

FastAPI reads (and parses) the body of a route with a body parameter before it resolves
the route's dependencies, so a dependency would authenticate too late: a tenant with no
requests left could still make the server read and parse 60 MiB. ``AdmittedRoute`` wraps
the route's handler instead: it authenticates, checks the key's scope, and takes one
request and a concurrency lease (``Limits.admit_request``), then hands the request on.
The dependencies reuse the caller it found (api/deps.py), and the lease is given back
when the handler is done, however it ends (error, timeout, client gone).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from embedgate.api.deps import RequiresScope, admit, authenticate
from embedgate.tenancy.keys import Scope


class AdmittedRoute(APIRoute):
    """An APIRoute whose requests are authenticated and admitted before anything else."""

    spends_tokens = False  # True where an empty token quota refuses it at once

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not needs_caller(self.dependant):  # e.g. a catch-all answering 404 to anyone
            return handler
        scope = required_scope(self.dependant)
        spends_tokens = self.spends_tokens

        async def admitted(request: Request) -> Response:
            limits, admission = await admit(request, scope, spends_tokens=spends_tokens)
            try:
                return await handler(request)
            finally:
                await limits.finish(admission, succeeded=True)  # the lease only

        return admitted


class EmbeddingsRoute(AdmittedRoute):
    spends_tokens = True


def needs_caller(dependant: Dependant) -> bool:
    """Whether a route's dependencies ask for the calling tenant."""
    return any(
        dependency.call is authenticate or isinstance(dependency.call, RequiresScope)
        or needs_caller(dependency)
        for dependency in dependant.dependencies
    )  # fmt: skip


def required_scope(dependant: Dependant) -> Scope | None:
    """The scope a route's dependencies ask of the key, if any."""
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, RequiresScope):
            return dependency.call.scope
        found = required_scope(dependency)
        if found is not None:
            return found
    return None
