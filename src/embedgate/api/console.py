"""/console/login, /console/session, /console/logout: the web console's sessions.

A key is exchanged once, in a JSON body (a cross-site form cannot send one), for an
HttpOnly, SameSite=Strict cookie; the page holds only the CSRF token. Every answer here
carries ``Cache-Control: no-store``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError

from embedgate.api.context import RequestContext
from embedgate.api.deps import RuntimeDep, client_ip
from embedgate.api.schemas.console import Login
from embedgate.config.settings import Settings
from embedgate.errors import EmbedgateError, from_validation_errors
from embedgate.tenancy.auth import CallerDenied
from embedgate.tenancy.sessions import CSRF_HEADER, SESSION_COOKIE, ConsoleSessions, Opened
from embedgate.tenancy.usage import isoformat

NO_STORE = {"Cache-Control": "no-store"}


class NoStoreRoute(APIRoute):
    """Sessions, CSRF tokens and their errors must never be cached, by browser or proxy."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def no_store(request: Request) -> Response:
            try:
                response = await handler(request)
            except EmbedgateError as error:
                error.headers.update(NO_STORE)
                raise
            response.headers.update(NO_STORE)
            return response

        return no_store


router = APIRouter(prefix="/console", tags=["console"], route_class=NoStoreRoute)


async def _login_body(request: Request) -> Login:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise EmbedgateError(
            415, "Send the key as JSON: Content-Type: application/json.",
            code="unsupported_media_type", type="invalid_request_error",
        )  # fmt: skip
    try:
        return Login.model_validate_json(await request.body())
    except ValidationError as exc:
        raise from_validation_errors(exc.errors()) from None


def _session_json(sessions: ConsoleSessions, token: str, opened: Opened) -> dict[str, Any]:
    session, caller = opened.session, opened.caller
    return {
        "kind": session.kind, "tenant_id": session.tenant_id, "key_prefix": session.key_prefix,
        "scopes": list(caller.key.scopes) if caller is not None else None,
        "csrf_token": sessions.csrf_token(token), "expires_at": isoformat(session.expires_at),
    }  # fmt: skip


def _secure(request: Request, settings: Settings) -> bool:
    mode = settings.console_secure_cookie
    return mode == "always" or (mode == "auto" and request.url.scheme == "https")


def _note(request: Request, opened: Opened) -> None:
    """Tenant and key prefix for the access log; console calls are not metered."""
    RequestContext.of(request).note(opened.session.tenant_id, opened.session.key_prefix)


@router.post("/login")
async def login(request: Request, runtime: RuntimeDep) -> JSONResponse:
    body = await _login_body(request)
    sessions = runtime.sessions
    try:
        token, opened = await sessions.open(body.key, client_ip(request))
    except CallerDenied as denied:  # metered and audited as that key's refusal anywhere
        RequestContext.of(request).identify(denied.caller)
        raise
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:  # one browser, one session
        await sessions.discard(previous)
    _note(request, opened)
    response = JSONResponse(_session_json(sessions, token, opened))
    response.set_cookie(
        SESSION_COOKIE, token, max_age=int(sessions.ttl.total_seconds()), path="/",
        secure=_secure(request, runtime.settings), httponly=True, samesite="strict",
    )  # fmt: skip
    return response


NO_SESSION = dict.fromkeys(
    ("kind", "tenant_id", "key_prefix", "scopes", "csrf_token", "expires_at")
)


@router.get("/session")
async def current(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """The session, or ``"kind": null`` without a cookie: asking is how the page learns it
    must show the login form, which is not an error. A cookie that no longer stands is."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return JSONResponse(NO_SESSION)
    opened = await runtime.sessions.current(token, client_ip(request))
    _note(request, opened)
    return JSONResponse(_session_json(runtime.sessions, token, opened))


@router.post("/logout", status_code=204)
async def logout(request: Request, runtime: RuntimeDep) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await runtime.sessions.close(token, request.headers.get(CSRF_HEADER), client_ip(request))
    response = Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=_secure(request, runtime.settings), httponly=True,
        samesite="strict",
    )  # fmt: skip
    return response
