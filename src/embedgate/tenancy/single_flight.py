"""One load at a time per key: callers that miss a cache together share one lookup.

When a cached tenant or key record expires under load, every request in flight for it
misses at once; without this each would read the store (a herd of identical queries every
few seconds). The load runs as a task of its own, so a caller that is cancelled (its client
went away) does not cancel it for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._loading: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """``load()``'s result, or that of the same key's load already in flight."""
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(load())
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(task)
