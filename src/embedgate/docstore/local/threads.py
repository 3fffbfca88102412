"""How the embedded store runs a tenant's blocking calls: in a worker thread, taken once
the tenant is within its share of threads (tenant_gate; the wait is on the event loop),
under the tenant's lock; a write is refused there once the tenant is deleted."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

from embedgate.docstore.base import TenantDeleted
from embedgate.docstore.local.cache import Tenant, TenantCache
from embedgate.docstore.local.tombstones import Tombstones
from embedgate.docstore.tenant_gate import TenantGate

T = TypeVar("T")


class TenantThreads:
    def __init__(self, cache: TenantCache, gate: TenantGate, tombstones: Tombstones) -> None:
        self.cache = cache
        self._gate = gate
        self._tombstones = tombstones

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, under no tenant's lock."""
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))

    async def call(self, tenant: str, body: Callable[..., T], *args: Any) -> T:
        """``body(handle, *args)`` under the tenant's lock."""
        async with self._gate.hold(tenant):
            return await self.run(self._locked, tenant, body, *args)

    async def write(self, tenant: str, body: Callable[..., T], *args: Any) -> T:
        """``call`` for writes: refused once the tenant is deleted (``_writing``)."""
        async with self._gate.hold(tenant):
            return await self.run(self._writing, tenant, body, *args)

    async def read(self, tenant: str, query: Callable[..., T], *args: Any) -> T | None:
        """``query(conn, *args)`` on the tenant's database; None if it has none."""

        def body(handle: Tenant) -> T | None:
            conn = self.cache.connection(handle, create=False)
            return None if conn is None else query(conn, *args)

        return await self.call(tenant, body)

    def _locked(self, tenant_id: str, body: Callable[..., T], *args: Any) -> T:
        tenant = self.cache.tenant(tenant_id)
        with tenant.lock:
            return body(tenant, *args)

    def _writing(self, tenant_id: str, body: Callable[..., T], *args: Any) -> T:
        """``_locked`` for writes: a deleted tenant's are refused under its lock, so none
        runs beside or after its delete."""
        tenant = self.cache.tenant(tenant_id)
        with tenant.lock:
            if tenant.key in self._tombstones:
                raise TenantDeleted()
            return body(tenant, *args)
