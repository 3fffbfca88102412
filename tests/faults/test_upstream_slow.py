"""Engines that slow down or die under two tenants' traffic, over HTTP: the gateway app in
front of stub engines on real sockets (tests/engine/backends/stub.py).

- An engine that gets 20x slower: its window shrinks, and the requests queued in embedgate
  (another tenant's too) wait there and succeed, where sending them all at once would
  have the engine's own queue outlast the attempt timeout. A control run with a fixed
  window as wide as the flood shows that the window is what keeps them from failing.
- An engine that dies: it is ejected, traffic moves to the other at once and without an
  error, and it is probed back when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from embedgate.config.models import UpstreamModel
from embedgate.tenancy.policy import Policy
from tests.conftest import ADMIN_KEY, AppClient
from tests.engine.backends.stub import answer

pytestmark = pytest.mark.anyio
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


class Engine:
    """A capacity-limited engine: ``capacity`` requests at a time, ``delay`` seconds each,
    the rest in its own FIFO queue (as SGLang's and vLLM's)."""

    def __init__(self, capacity: int, delay: float) -> None:
        self.delay = delay
        self.slots = asyncio.Semaphore(capacity)
        self.held = 0  # requests inside it, running or queued
        self.peak = 0
        self.served = 0  # inputs embedded

    async def handle(self, request: web.Request) -> web.StreamResponse:
        count = len((await request.json())["input"])
        self.held += 1
        self.peak = max(self.peak, self.held)
        try:
            async with self.slots:
                await asyncio.sleep(self.delay)
        finally:
            self.held -= 1
        self.served += count
        return answer(dims=4, count=count)


@contextlib.asynccontextmanager
async def engine_server(engine: Engine, port: int | None = None) -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_post("/v1/embeddings", engine.handle)
    async with TestServer(app, host="127.0.0.1", port=port) as server:
        yield server


def upstream(urls: list[str], **extra: Any) -> UpstreamModel:
    return UpstreamModel(base_urls=urls, upstream_model="m", dimensions=4, max_retries=2,
                         **extra)  # fmt: skip


async def second_tenant(app: AppClient, tenant_id: str) -> httpx.AsyncClient:
    control = app.app.state.runtime.control
    await control.tenants.create(tenant_id, name=None, plan=None, policy=Policy(), actor="test")
    key = (await control.key_admin.create(tenant_id, actor="test")).key
    return httpx.AsyncClient(transport=app.http._transport, base_url="http://embedgate.test",
                             headers={"Authorization": f"Bearer {key}"}, timeout=120)  # fmt: skip


TEXTS = itertools.count()


async def post(client: httpx.AsyncClient, texts: int = 1) -> int:
    """Texts never sent before, so that no embedding cache answers them."""
    body = {"model": "remote", "input": [f"text {next(TEXTS)}" for _ in range(texts)]}
    return (await client.post("/v1/embeddings", json=body, timeout=120)).status_code


async def endpoints(app: AppClient) -> dict[str, Any]:
    system = (await app.http.get("/admin/system", headers=ADMIN)).json()
    (model,) = [m for m in system["models"] if m["name"] == "remote"]
    return dict(model["endpoints"])


async def slow_engine_under_flood(
    app_factory: Any, *, min_in_flight: int, max_in_flight: int
) -> tuple[list[int], list[int], int, int, Engine]:
    """Statuses of the flood's and the light tenant's requests once the engine is 20x
    slower, the window before and after, and the engine."""
    engine = Engine(capacity=2, delay=0.01)
    async with engine_server(engine) as server:
        url = str(server.make_url("/v1"))
        spec = upstream([url], timeout=1.0, max_batch_size=1,
                        min_in_flight=min_in_flight, max_in_flight=max_in_flight)  # fmt: skip
        app: AppClient = await app_factory(models={"remote": spec}, default_model="remote",
                                           warmup=False)  # fmt: skip
        flood = await second_tenant(app, "flood")
        for _ in range(10):  # the engine's latency at its normal speed
            assert await post(app.http) == 200
        before = (await endpoints(app))[url]["window"]
        engine.delay = 0.2  # 20x slower: 2 at a time, 10 per second
        heavy = [asyncio.create_task(post(flood)) for _ in range(16)]
        await asyncio.sleep(0.1)
        light = [asyncio.create_task(post(app.http)) for _ in range(3)]
        statuses = await asyncio.gather(*heavy), await asyncio.gather(*light)
        after = (await endpoints(app))[url]["window"]
        await flood.aclose()
    return statuses[0], statuses[1], before, after, engine


async def test_a_slowing_engine_shrinks_its_window_and_queued_requests_wait_and_succeed(
    app_factory: Any,
) -> None:
    flood, light, before, after, engine = await slow_engine_under_flood(
        app_factory, min_in_flight=1, max_in_flight=64
    )
    assert flood == [200] * 16
    assert light == [200] * 3  # the other tenant's requests waited in embedgate, not there
    assert after < before
    # The engine's own queue stayed short: far less than the 19 requests sent at it.
    assert engine.peak <= 8


async def test_control_a_window_as_wide_as_the_flood_lets_the_engine_queue_outlast_the_timeout(
    app_factory: Any,
) -> None:
    """The same with the window fixed at 64: all go to the engine at once, and those at
    the back of its queue wait longer than the 1 s attempt timeout."""
    flood, light, _, _, engine = await slow_engine_under_flood(
        app_factory, min_in_flight=64, max_in_flight=64
    )
    assert 504 in flood + light
    assert engine.peak > 8


async def test_a_dead_engine_is_ejected_traffic_moves_at_once_and_it_is_probed_back(
    app_factory: Any,
) -> None:
    first, second = Engine(capacity=8, delay=0.005), Engine(capacity=8, delay=0.005)
    async with engine_server(second) as alive:
        dying = engine_server(first)
        dead = await dying.__aenter__()
        port = dead.port
        urls = [str(dead.make_url("/v1")), str(alive.make_url("/v1"))]
        spec = upstream(urls, timeout=5.0, max_batch_size=4)
        app: AppClient = await app_factory(models={"remote": spec}, default_model="remote",
                                           warmup=False)  # fmt: skip
        other = await second_tenant(app, "other")
        load = [post(c, 2) for c in (app.http, other) for _ in range(10)]
        assert await asyncio.gather(*load) == [200] * 20
        assert first.served > 0  # both engines were in use
        assert second.served > 0

        await dying.__aexit__(None, None, None)  # engine one dies
        load = [post(c, 2) for c in (app.http, other) for _ in range(20)]
        assert await asyncio.gather(*load) == [200] * 40  # failover, no error
        state = await endpoints(app)
        assert state[urls[0]]["healthy"] is False
        assert state[urls[1]]["healthy"] is True
        served = second.served
        assert await asyncio.gather(*(post(app.http) for _ in range(10))) == [200] * 10
        assert second.served == served + 10  # all to the live one, none tried on the dead

        async with engine_server(first, port=port):  # it comes back
            before = first.served
            for _ in range(100):  # its cooldown (5 s) ends, one probe succeeds
                await asyncio.sleep(0.1)
                assert await post(app.http) == 200
                if first.served > before:
                    break
            assert first.served > before
            assert (await endpoints(app))[urls[0]]["healthy"] is True
        await other.aclose()
