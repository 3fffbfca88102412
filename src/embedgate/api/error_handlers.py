"""The handlers that answer every error a route raises in the OpenAI envelope
(``embedgate.errors``), and note its code for the middleware's metrics and audit."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from embedgate.api.context import RequestContext
from embedgate.errors import EmbedgateError, from_validation_errors


def _respond(request: Request, error: EmbedgateError) -> Response:
    RequestContext.of(request).error_code = error.code  # read by the metrics middleware
    if error.status == 401 and "www-authenticate" not in {k.lower() for k in error.headers}:
        error.headers["WWW-Authenticate"] = _challenge(request)
    return error.response()


def _challenge(request: Request) -> str:
    """RFC 6750's challenge: the body stays exactly "Invalid API key" (the contract), the
    header says whether a key was sent at all. Which of unknown, revoked or expired it is
    stays unsaid."""
    sent = "authorization" in request.headers or "cookie" in request.headers
    if not sent:
        return 'Bearer realm="embedgate"'
    return ('Bearer realm="embedgate", error="invalid_token", '
            'error_description="the key sent is not a valid key"')  # fmt: skip


async def _handle_own(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EmbedgateError)
    return _respond(request, exc)


async def _handle_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _respond(request, from_validation_errors(exc.errors()))


async def _handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    messages = {404: "Not found.", 405: "Method not allowed."}
    message = messages.get(exc.status_code, str(exc.detail))
    error = EmbedgateError(exc.status_code, message, code=codes.get(exc.status_code))
    error.headers.update(exc.headers or {})
    return _respond(request, error)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(EmbedgateError, _handle_own)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
