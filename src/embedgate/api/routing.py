"""Routes that parse JSON strictly and refuse NUL characters, before any handler runs.

FastAPI reads bodies with Python's ``json``, which accepts ``NaN`` and ``Infinity``, lone
surrogates (that later fail to encode in a store), integers of any size, and recurses until
``RecursionError`` on deep nesting. orjson refuses all of these (400 ``invalid_json``, as on
/v1/embeddings) and reads integers beyond 64 bits as floats, which integer fields refuse.
NUL characters are refused anywhere in the URL's parameters or in a body's strings:
PostgreSQL cannot store or compare them, and no name, id or text needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

from embedgate.errors import invalid_json, invalid_request

MAX_JSON_DEPTH = 64  # far below where nested metadata could no longer be written back out
NUL = "must not contain NUL characters"
_CONTAINERS = (str, dict, list)  # what _walk looks into


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = orjson.loads(await self.body())
            except orjson.JSONDecodeError:
                raise invalid_json() from None
        return self._json


def sends_json(request: Request) -> bool:
    """Whether FastAPI will parse this body as JSON (its Content-Type says so)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and
                                           media.endswith("+json"))  # fmt: skip


class _Refused(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        self.path: list[str | int] = []  # filled in while the walk unwinds


def check_json(value: Any) -> None:
    """400 on a NUL character in any string (keys too) or nesting deeper than the limit."""
    try:
        _walk(value, 1)
    except _Refused as refused:
        param = _param(refused.path)
        where = f"'{param}'" if param else "request body"
        raise invalid_request(f"Invalid {where}: {refused.message}", param) from None


def _walk(value: Any, depth: int) -> None:
    # Scalars are checked inline, with no call each (a 64 MiB body can hold 30 million of
    # them); where a refusal lies is worked out only when there is one.
    kind = type(value)  # JSON values are exactly these types, never subclasses
    if kind is str:
        if "\x00" in value:
            raise _Refused(NUL)
        return
    if depth > MAX_JSON_DEPTH:
        raise _Refused(f"nested more than {MAX_JSON_DEPTH} levels deep")
    if kind is dict:
        for key, item in value.items():
            try:
                if "\x00" in key:
                    raise _Refused(NUL)
                if type(item) in _CONTAINERS:
                    _walk(item, depth + 1)
            except _Refused as refused:
                refused.path.insert(0, key)
                raise
    elif kind is list:
        try:
            for item in value:
                kind = type(item)
                if kind is str:
                    if "\x00" in item:
                        raise _Refused(NUL)
                elif kind is dict or kind is list:
                    _walk(item, depth + 1)
        except _Refused as refused:
            refused.path.insert(0, next(i for i, x in enumerate(value) if x is item))
            raise


def _param(path: list[str | int]) -> str | None:
    """The parameter's name in errors, to at most 8 steps; a long or odd key (input, not a
    field) ends it."""
    out = ""
    for part in path[:8]:
        if isinstance(part, int):
            out += f"[{part}]"
        elif len(part) > 64 or not part.isprintable():
            break
        else:
            out += f".{part}" if out else part
    return out or None


def check_url(request: Request, *, path: bool) -> None:
    params = request.query_params.multi_items()
    if path:
        params = [*request.path_params.items(), *params]
    for name, value in params:
        if isinstance(value, str) and "\x00" in value:
            raise invalid_request(f"Invalid '{name}': {NUL}", name)


class StrictJsonRoute(APIRoute):
    """An APIRoute whose requests parse JSON with orjson and refuse NUL characters."""

    checks_path = True  # False where the routes check their path parameters themselves

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        path = self.checks_path and self.include_in_schema  # a catch-all's names mean nothing
        has_body = self.body_field is not None

        async def strict(request: Request) -> Response:
            check_url(request, path=path)
            request = StrictJsonRequest(request.scope, request.receive)
            # Read and checked here, so that a body over the size limit (raised while it is
            # read) is a 413 rather than FastAPI's 400 for a body it could not parse.
            if has_body and await request.body() and sends_json(request):
                check_json(await request.json())
            return await handler(request)

        return strict
