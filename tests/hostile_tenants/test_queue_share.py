"""Issue 13, point 4: one tenant flooding the model queue gets the 503s, not the others.

Before the fix, a tenant sending max-size requests from many clients kept the queue full,
and every other tenant's request that arrived meanwhile got 503 ``overloaded``."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import httpx

from tests.hostile_tenants.conftest import bearer, make_tenant, serve

QUEUE, PER_REQUEST = 256, 128  # the queue holds two of the flooder's requests
FLOODERS = 6
LIGHT_REQUESTS = 10
# Long enough that a 128-input request keeps the CPU busy for a while.
FILLER = " ".join(["the quarterly report lists revenue by region and product line"] * 4)
Outcome = tuple[int, str | None]  # status, error code


async def _flood(url: str, key: str, stop: asyncio.Event, statuses: list[int]) -> None:
    counter = itertools.count()
    async with httpx.AsyncClient(headers=bearer(key), timeout=120) as client:
        while not stop.is_set():
            n = next(counter)
            # Unique texts: nothing is answered from the cache, every input is queued.
            inputs = [f"{id(statuses)} {n} {i} {FILLER}" for i in range(PER_REQUEST)]
            response = await client.post(f"{url}/v1/embeddings", json={"input": inputs})
            statuses.append(response.status_code)
            if response.status_code == 503:
                await asyncio.sleep(0.05)


async def _light(url: str, key: str) -> list[Outcome]:
    outcomes: list[Outcome] = []
    async with httpx.AsyncClient(headers=bearer(key), timeout=120) as client:
        for n in range(LIGHT_REQUESTS):
            response = await client.post(f"{url}/v1/embeddings",
                                         json={"input": f"light request {n}"})  # fmt: skip
            code = response.json().get("error", {}).get("code") if response.is_error else None
            outcomes.append((response.status_code, code))
            await asyncio.sleep(0.2)
    return outcomes


async def _attack(url: str, flooder: str, light: str) -> tuple[list[int], list[Outcome]]:
    """The flooder's statuses while the light tenant sent, and the light tenant's."""
    stop = asyncio.Event()
    before: list[int] = []
    floods = [asyncio.create_task(_flood(url, flooder, stop, before)) for _ in range(FLOODERS)]
    # Let the flood fill the queue: the flooder starts getting 503s itself.
    for _ in range(600):
        if 503 in before:
            break
        await asyncio.sleep(0.1)
    assert 503 in before, "the flood never filled the queue"
    mark = len(before)
    outcomes = await _light(url, light)
    during = before[mark:]
    stop.set()
    await asyncio.gather(*floods)
    return during, outcomes


def test_the_flooding_tenant_gets_the_503s_not_the_other(tmp_path: Path) -> None:
    env = {"EMBEDGATE_MAX_QUEUE_INPUTS": str(QUEUE),
           "EMBEDGATE_MAX_INPUTS_PER_REQUEST": str(PER_REQUEST),
           "EMBEDGATE_EMBEDDING_CACHE_MB": "0"}  # fmt: skip
    with serve(tmp_path / "data", **env) as server:
        flooder = make_tenant(server.url, "flooder")
        light = make_tenant(server.url, "light")
        during, outcomes = asyncio.run(_attack(server.url, flooder, light))
    assert outcomes == [(200, None)] * LIGHT_REQUESTS, outcomes
    assert 503 in during  # the queue stayed full meanwhile: the flooder was refused
    assert set(during) <= {200, 503}
