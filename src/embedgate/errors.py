"""One error type, rendered in the OpenAI envelope by one set of handlers
(``api.error_handlers``).

Unexpected exceptions (bugs) are answered by ``api.middleware`` with the same type.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.responses import Response

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    431: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "server_error",
    504: "timeout_error",
    507: "server_error",
}


class EmbedgateError(Exception):
    """An error a client should see: status, OpenAI-shaped body, optional headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,  # the OpenAI envelope's field name
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _TYPES.get(status, "api_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> Response:
        return Response(
            orjson.dumps(self.body()),
            status_code=self.status,
            media_type="application/json",
            headers=self.headers,
        )


def invalid_request(message: str, param: str | None, code: str | None = None) -> EmbedgateError:
    return EmbedgateError(400, message, param=param, code=code or "invalid_value")


def overloaded(retry_after: float) -> EmbedgateError:
    seconds = max(1, math.ceil(retry_after))
    return EmbedgateError(
        503,
        "The server is overloaded; retry after the time in Retry-After.",
        code="overloaded",
        headers={"Retry-After": str(seconds), "retry-after-ms": str(int(retry_after * 1000))},
    )


def _param_from_loc(loc: Sequence[int | str]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    if not parts:
        return None
    out = parts[0]
    for part in parts[1:]:
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out


def invalid_json() -> EmbedgateError:
    return invalid_request(
        "We could not parse the JSON body of your request. Send a valid JSON object "
        "(UTF-8, Content-Type: application/json).",
        None,
        code="invalid_json",
    )


def from_validation_errors(errors: Sequence[Any]) -> EmbedgateError:
    """The first pydantic error, as a 400 naming the offending parameter."""
    first = errors[0] if errors else {"loc": (), "msg": "Invalid request"}
    if first.get("type") == "json_invalid":
        return invalid_json()
    param = _param_from_loc(first.get("loc", ()))
    if first.get("type") in ("model_type", "model_attributes_type") and param is None:
        return invalid_request(
            "The request body must be a JSON object, sent with Content-Type: application/json.",
            None,
        )
    message = str(first.get("msg", "Invalid request")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
    elif param:
        message = f"Invalid '{param}': {message}"
    return invalid_request(message, param)
