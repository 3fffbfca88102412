"""A bounded share of a store's workers per tenant: worker threads or pool connections.

Without it, a tenant that floods the store with slow calls takes every worker thread
(or pooled connection), each then waiting behind that tenant's own lock, and any other
tenant's call waits for one of them. Through a gate a tenant holds at most ``limit``
workers at once; its further calls wait here, on the event loop, holding nothing, so the
rest of the pool stays free for the other tenants. Only tenants with a call in flight have
an entry: memory follows concurrent tenants, not every tenant ever seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

DEFAULT_LIMIT = 4


@dataclass(slots=True)
class _Entry:
    semaphore: asyncio.Semaphore
    users: int = field(default=0)  # calls waiting or running: the entry goes at 0


class TenantGate:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = max(1, limit)
        self._entries: dict[str, _Entry] = {}

    @asynccontextmanager
    async def hold(self, tenant: str) -> AsyncIterator[None]:
        """One of ``tenant``'s ``limit`` places, for the duration of the block."""
        entry = self._entries.get(tenant)
        if entry is None:
            entry = self._entries[tenant] = _Entry(asyncio.Semaphore(self.limit))
        entry.users += 1
        try:
            async with entry.semaphore:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0 and self._entries.get(tenant) is entry:
                del self._entries[tenant]

    def tracked(self) -> int:
        """Tenants with a call waiting or in flight (for tests and metrics)."""
        return len(self._entries)
