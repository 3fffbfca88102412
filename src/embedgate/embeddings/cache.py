"""An LRU cache of embeddings, scoped per tenant, bounded in bytes.

The key is (tenant uid, model, the exact model input): the input is the text after the
instruction was applied (or the token ids), so the instruction is part of it, and vectors
are kept at full size so every ``dimensions`` is served from one entry. The tenant is part
of every key: a tenant's hit never depends on what another tenant sent, so timing reveals
nothing across tenants; and it is the tenant's uid, not its id, so a tenant re-created
under a deleted one's id starts cold (a delete also purges the old entries at once).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from embedgate.engine.backends.base import ModelInput

ENTRY_OVERHEAD = 200  # bytes of dict slot, tuple and array header per entry, roughly

CacheKey = tuple[str, str, str | bytes]


def cache_key(tenant: str, model: str, item: ModelInput) -> CacheKey:
    if item.text is not None:
        return (tenant, model, item.text)
    return (tenant, model, np.asarray(item.token_ids, dtype=np.int64).tobytes())


def _size(key: CacheKey, vector: np.ndarray) -> int:
    content = key[2]
    text_bytes = len(content) * 4 if isinstance(content, str) else len(content)
    return vector.nbytes + text_bytes + ENTRY_OVERHEAD


class EmbeddingCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[CacheKey, np.ndarray] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(
        self, tenant: str, model: str, inputs: Sequence[ModelInput]
    ) -> list[np.ndarray | None]:
        found: list[np.ndarray | None] = []
        for item in inputs:
            key = cache_key(tenant, model, item)
            vector = self._entries.get(key)
            if vector is not None:
                self._entries.move_to_end(key)
            found.append(vector)
        hits = sum(v is not None for v in found)
        self.hits += hits
        self.misses += len(found) - hits
        return found

    def store(
        self, tenant: str, model: str, inputs: Sequence[ModelInput], vectors: np.ndarray
    ) -> None:
        for item, vector in zip(inputs, vectors, strict=True):
            key = cache_key(tenant, model, item)
            size = _size(key, vector)
            if size > self.max_bytes:
                continue
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= _size(key, old)
            # a copy: a row of the batch's array would keep the whole batch alive
            self._entries[key] = np.array(vector, copy=True)
            self.bytes += size
        while self.bytes > self.max_bytes and self._entries:
            key, vector = self._entries.popitem(last=False)
            self.bytes -= _size(key, vector)

    def purge(self, tenant: str) -> int:
        """Drop every entry of ``tenant`` (a uid: it was deleted); how many went."""
        doomed = [key for key in self._entries if key[0] == tenant]
        for key in doomed:
            self.bytes -= _size(key, self._entries.pop(key))
        return len(doomed)

    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
