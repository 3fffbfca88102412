"""Rate-limit arithmetic, and the in-memory limiter of a single process.

Requests and tokens per minute are token buckets: a bucket holds up to its per-minute limit,
refills continuously at limit/60 per second, and a request takes its cost (1 request, or
its prompt tokens) or is refused with the time until the cost would be there. Concurrency is
a set of leases with expiry; the monthly quota is a counter. One ``check`` tests them all and
takes from them only if every one admits, so a refused request costs nothing.

``RedisLimiter`` (``ratelimit_redis``) runs the same algorithm in one Lua script, atomically,
so that replicas share one limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

MINUTE_MS = 60_000.0
# Decision kinds besides "ok" and a bucket index: the first refusing check.
CONCURRENCY = -1
QUOTA = -2
NEED_SEED = -3  # the quota counter is unknown here: seed it from metering and ask again


@dataclass(frozen=True, slots=True)
class Bucket:
    key: str
    capacity: int  # per minute
    cost: int


@dataclass(frozen=True, slots=True)
class Lease:
    key: str
    limit: int
    id: str
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class QuotaAsk:
    key: str
    limit: int
    cost: int
    seed: int | None  # tokens already used this month, when the limiter may not know
    ttl_s: int
    # Refused unless max(cost, need) tokens are left: a request admitted before its tokens
    # are known takes 0 but needs 1, so a spent quota refuses it before any work.
    need: int = 0


@dataclass(frozen=True, slots=True)
class Ask:
    buckets: tuple[Bucket, ...] = ()
    lease: Lease | None = None
    quota: QuotaAsk | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    ok: bool
    refused_by: int | None = None  # a bucket index, CONCURRENCY, QUOTA or NEED_SEED
    wait_ms: float = 0.0  # until the refused bucket holds the cost; -1: it never will
    levels: tuple[float, ...] = field(default_factory=tuple)  # each bucket after the check
    quota_used: int = 0


class Limiter(Protocol):
    backend: str

    async def check(self, ask: Ask) -> Decision: ...

    async def release(self, lease: Lease | None, refund: QuotaAsk | None) -> None: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


def refill(level: float | None, stamp: float | None, capacity: int, now_ms: float) -> float:
    """A bucket's level at ``now_ms``; an unknown bucket is full."""
    if capacity <= 0:
        return 0.0
    if level is None or stamp is None:
        return float(capacity)
    return min(float(capacity), level + (now_ms - stamp) * capacity / MINUTE_MS)


def wait_for(level: float, cost: int, capacity: int) -> float:
    """Milliseconds until a bucket at ``level`` holds ``cost``; -1 if it never can."""
    if cost > capacity or capacity <= 0:
        return -1.0
    return max(0.0, (cost - level) * MINUTE_MS / capacity)


def reset_ms(level: float, capacity: int) -> float:
    """Milliseconds until a bucket is full again."""
    return 0.0 if capacity <= 0 else max(0.0, (capacity - level) * MINUTE_MS / capacity)


class MemoryLimiter:
    """One process's limits. Single-threaded by construction: no ``await`` inside a check."""

    backend = "memory"

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (level, stamp ms)
        self._leases: dict[str, dict[str, float]] = {}  # key -> lease id -> expiry ms
        self._quotas: dict[str, int] = {}

    async def check(self, ask: Ask) -> Decision:
        now = time.monotonic() * 1000
        levels = []
        for index, bucket in enumerate(ask.buckets):
            level, stamp = self._buckets.get(bucket.key, (None, None))
            level = refill(level, stamp, bucket.capacity, now)
            levels.append(level)
            if level < bucket.cost:
                wait = wait_for(level, bucket.cost, bucket.capacity)
                return Decision(False, index, wait, tuple(levels))
        if ask.lease is not None:
            leases = self._live_leases(ask.lease.key, now)
            if len(leases) >= ask.lease.limit:
                return Decision(False, CONCURRENCY, 0.0, tuple(levels))
        used = 0
        if ask.quota is not None:
            known = self._quotas.get(ask.quota.key)
            if known is None and ask.quota.seed is None:
                return Decision(False, NEED_SEED)
            used = known if known is not None else ask.quota.seed or 0
            if used + max(ask.quota.cost, ask.quota.need) > ask.quota.limit:
                return Decision(False, QUOTA, 0.0, tuple(levels), used)
        return self._take(ask, now, levels, used)

    def _take(self, ask: Ask, now: float, levels: list[float], used: int) -> Decision:
        after = []
        for bucket, level in zip(ask.buckets, levels, strict=True):
            self._buckets[bucket.key] = (level - bucket.cost, now)
            after.append(level - bucket.cost)
        if ask.lease is not None:
            self._leases.setdefault(ask.lease.key, {})[ask.lease.id] = now + ask.lease.ttl_ms
        if ask.quota is not None:
            used += ask.quota.cost
            self._quotas[ask.quota.key] = used
        self._forget_full(now)
        return Decision(True, None, 0.0, tuple(after), used)

    def _live_leases(self, key: str, now: float) -> dict[str, float]:
        leases = self._leases.get(key, {})
        for lease_id in [i for i, expiry in leases.items() if expiry <= now]:
            del leases[lease_id]
        return leases

    def _forget_full(self, now: float) -> None:
        """Buckets untouched for a minute are full again: drop them so memory stays bounded."""
        if len(self._buckets) > 100_000:
            stale = [k for k, (_, stamp) in self._buckets.items() if now - stamp > MINUTE_MS]
            for key in stale:
                del self._buckets[key]

    async def release(self, lease: Lease | None, refund: QuotaAsk | None) -> None:
        if lease is not None:
            leases = self._leases.get(lease.key, {})
            leases.pop(lease.id, None)
            if not leases:
                self._leases.pop(lease.key, None)
        if refund is not None and refund.key in self._quotas:
            self._quotas[refund.key] = max(0, self._quotas[refund.key] - refund.cost)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
