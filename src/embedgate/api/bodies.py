"""A JSON request body, read, checked and validated for a route (/v1/embeddings, /v1/rerank).

JSON whatever the Content-Type says (curl -d sends form-encoded), parsed by orjson, which
also refuses NaN, invalid UTF-8 and pathological nesting. The route's own caps run on the
parsed data before validation, so they bound its work too. A large body is parsed and
validated on the parse pool, in its tenant's turn, not on the event loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from embedgate.errors import from_validation_errors, invalid_json
from embedgate.runtime import Runtime
from embedgate.tenancy.auth import Caller

INLINE_BYTES = 64 * 1024  # parsed on the event loop: cheaper than a thread hop

Body = TypeVar("Body", bound=BaseModel)


async def read_body(
    request: Request, caller: Caller, schema: type[Body], check: Callable[[Any], None]
) -> Body:
    body = await request.body()
    parse = functools.partial(parse_body, body, schema, check)
    if len(body) <= INLINE_BYTES:
        return parse()
    runtime: Runtime = request.app.state.runtime
    return await runtime.parsing.run(caller.tenant.uid, parse)


def parse_body(body: bytes, schema: type[Body], check: Callable[[Any], None]) -> Body:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid_json() from None
    check(data)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise from_validation_errors(exc.errors()) from None
