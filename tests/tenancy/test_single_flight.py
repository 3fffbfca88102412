"""Cache misses under load: concurrent callers share one store lookup."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from embedgate.storage.sql import SqlStateStore
from embedgate.tenancy.single_flight import SingleFlight
from tests.tenancy.test_tenant_lifecycle import Replica, create

pytestmark = pytest.mark.anyio


class Counted:
    def __init__(self, value: Any = "v", error: Exception | None = None) -> None:
        self.calls = 0
        self.value, self.error = value, error
        self.release = asyncio.Event()

    async def __call__(self) -> Any:
        self.calls += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.value


async def test_concurrent_callers_share_one_load_and_later_ones_load_again() -> None:
    flight: SingleFlight[str, Any] = SingleFlight()
    load = Counted()
    waiting = [asyncio.create_task(flight.run("k", load)) for _ in range(20)]
    await asyncio.sleep(0)
    load.release.set()
    assert await asyncio.gather(*waiting) == ["v"] * 20
    assert load.calls == 1
    assert await flight.run("k", load) == "v"  # done: the next miss loads afresh
    assert load.calls == 2


async def test_a_cancelled_caller_does_not_cancel_the_load_for_the_others() -> None:
    flight: SingleFlight[str, Any] = SingleFlight()
    load = Counted()
    first = asyncio.create_task(flight.run("k", load))
    second = asyncio.create_task(flight.run("k", load))
    await asyncio.sleep(0)
    first.cancel()
    load.release.set()
    assert await second == "v"
    assert first.cancelled()


async def test_a_failed_load_fails_every_caller_and_is_not_kept() -> None:
    flight: SingleFlight[str, Any] = SingleFlight()
    load = Counted(error=RuntimeError("database away"))
    waiting = [asyncio.create_task(flight.run("k", load)) for _ in range(3)]
    await asyncio.sleep(0)
    load.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    load.error = None
    assert await flight.run("k", load) == "v"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStateStore]:
    opened = await SqlStateStore.open(None, tmp_path)
    yield opened
    await opened.aclose()


async def test_a_burst_of_requests_with_a_cold_cache_reads_key_and_tenant_once(
    store: SqlStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await create(Replica(store), "acme")
    replica = Replica(store)  # a process whose caches are cold
    reads: list[str] = []
    by_digest, get = store.keys.by_digest, store.tenants.get

    async def counted_key(digest: str) -> Any:
        reads.append("key")
        return await by_digest(digest)

    async def counted_tenant(tenant_id: str) -> Any:
        reads.append("tenant")
        return await get(tenant_id)

    monkeypatch.setattr(store.keys, "by_digest", counted_key)
    monkeypatch.setattr(store.tenants, "get", counted_tenant)
    callers = await asyncio.gather(*(replica.auth.authenticate(key, None) for _ in range(50)))
    assert {caller.tenant.id for caller in callers} == {"acme"}
    assert sorted(reads) == ["key", "tenant"]
