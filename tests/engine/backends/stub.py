"""Real HTTP servers that answer as a test says: upstream engines that fail on cue.

Each named host is an aiohttp server on a free loopback port; every request reaches
``handler(host, request)``, so one handler plays several engines (``a`` refuses, ``b``
answers) and the backend talks to them over real sockets, as it does in production.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestServer

Handler = Callable[[str, web.Request], Awaitable[web.StreamResponse]]


def reply(dims: int = 4, count: int = 1) -> dict[str, Any]:
    vector = base64.b64encode(np.ones(dims, dtype="<f4").tobytes()).decode()
    return {
        "data": [{"index": i, "embedding": vector} for i in range(count)],
        "usage": {"prompt_tokens": 7},
    }


def answer(dims: int = 4, count: int = 1) -> web.Response:
    return web.json_response(reply(dims, count))


async def drop_connection(request: web.Request) -> web.StreamResponse:
    """Close the socket without an answer: the client sees the connection lost."""
    assert request.transport is not None
    request.transport.abort()
    return web.Response()


@contextlib.asynccontextmanager
async def stub_upstreams(
    handler: Handler, hosts: Sequence[str] = ("a", "b")
) -> AsyncIterator[dict[str, str]]:
    """``{host: base_url}`` of one running server per host, all answering via ``handler``."""
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for host in hosts:
            app = web.Application()

            async def route(request: web.Request, host: str = host) -> web.StreamResponse:
                return await handler(host, request)

            app.router.add_post("/v1/embeddings", route)
            server = TestServer(app, host="127.0.0.1")
            await stack.enter_async_context(server)
            urls[host] = str(server.make_url("/v1"))
        yield urls
