"""Key verification: only a live key whose digest is stored gets through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from embedgate.storage.records import Tenant
from embedgate.storage.sql import SqlStateStore
from embedgate.tenancy import keys as keys_module
from embedgate.tenancy.keys import KeyService

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStateStore]:
    opened = await SqlStateStore.open(None, tmp_path)
    for tenant_id in ("1001", "1002"):
        await opened.tenants.create(Tenant(tenant_id, tenant_id, "default", "active", {}, NOW, NOW))
    yield opened
    await opened.aclose()


async def test_forged_truncated_and_malformed_keys_fail(store: SqlStateStore) -> None:
    service = KeyService(store, b"server-secret")
    issued = await service.issue("1001")
    assert (await service.verify(issued.key)) == issued.record
    secret = issued.key.split("_")[-1]
    attempts = [
        f"tenant_1001_{'A' * 43}",  # forged: right shape, unknown digest
        f"tenant_1002_{secret}",  # someone else's tenant id with this secret
        issued.key[:-1],  # truncated
        issued.key + "x",
        issued.key.upper(),
        "",
        "Bearer " + issued.key,
        "tenant_1001_" + "é" * 43,
        "x" * 10_000,
    ]
    for attempt in attempts:
        assert await service.verify(attempt) is None, attempt


async def test_a_different_server_secret_verifies_nothing(store: SqlStateStore) -> None:
    issued = await KeyService(store, b"secret-one").issue("1001")
    assert await KeyService(store, b"secret-two").verify(issued.key) is None


async def test_expiry_bites_immediately(store: SqlStateStore) -> None:
    clock = Clock()
    service = KeyService(store, b"s", clock)
    issued = await service.issue("1001", expires_in=60)
    assert await service.verify(issued.key) is not None
    clock.now = NOW + timedelta(seconds=60)
    assert await service.verify(issued.key) is None


async def test_revocation_bites_within_the_cache_time(
    store: SqlStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys_module, "CACHE_SECONDS", 0.2)
    replica_a = KeyService(store, b"s")
    replica_b = KeyService(store, b"s")  # another replica, with its own cache
    issued = await replica_a.issue("1001")
    assert await replica_b.verify(issued.key) is not None
    assert await replica_a.revoke("1001", issued.record.id) == issued.record
    assert await replica_a.revoke("1001", issued.record.id) is None  # already revoked
    await asyncio.sleep(0.25)
    assert await replica_b.verify(issued.key) is None


async def test_last_use_is_written_in_one_batch(store: SqlStateStore) -> None:
    clock = Clock()
    service = KeyService(store, b"s", clock)
    first = await service.issue("1001")
    second = await service.issue("1002")
    clock.now = NOW + timedelta(minutes=3)
    await service.verify(first.key)
    await service.verify(second.key)
    await service.flush_usage()
    assert [k.last_used_at for k in await store.keys.for_tenant("1001")] == [clock.now]
    assert [k.last_used_at for k in await store.keys.for_tenant("1002")] == [clock.now]


async def test_last_use_waits_for_a_database_that_is_away(
    store: SqlStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    service = KeyService(store, b"s", clock)
    issued = await service.issue("1001")
    clock.now = NOW + timedelta(minutes=3)
    await service.verify(issued.key)

    async def away(last_used: object) -> None:
        raise ConnectionError("the database is restarting")

    with monkeypatch.context() as patch:
        patch.setattr(store.keys, "touch", away)
        with pytest.raises(ConnectionError):
            await service.flush_usage()
    await service.flush_usage()  # it is back
    assert [k.last_used_at for k in await store.keys.for_tenant("1001")] == [clock.now]
