"""Who holds a model's queue: admission by weighted share, so one tenant cannot fill it.

A request is admitted while the queue has room, as before. Past that, it is still admitted
if its tenant stays within its weighted share of the queue,
``max_queue * w_t / W`` (W: the weights of the tenants with inputs queued or in flight,
t's included); otherwise it gets 503 ``overloaded``. So the 503 goes to a tenant that holds
more than its share, never to one under it: the flooder is refused, the others are not.

The queue can grow past ``max_queue`` only by tenants under their share. Shares are
computed when each request arrives, and they shrink as more tenants join, so the sum of
what was admitted by share is not bounded by ``max_queue`` on its own: a hard ceiling of
``2 * max_queue`` bounds the memory. Weights are kept only for tenants with live inputs.
See docs/scheduling.md.
"""

from __future__ import annotations

import math

from embedgate.errors import overloaded

CEILING = 2  # the queue never holds more than this many times max_queue


class QueueShares:
    def __init__(self, max_queue: int) -> None:
        self._max_queue = max_queue
        self._live: dict[str, int] = {}  # tenant -> inputs queued or in flight
        self._weights: dict[str, float] = {}  # the same tenants -> their latest weight
        self._total = 0
        self._total_weight = 0.0

    @property
    def total(self) -> int:
        return self._total

    def holds(self, tenant: str) -> bool:
        """Whether ``tenant`` has inputs queued or in flight."""
        return tenant in self._live

    @property
    def tenants_tracked(self) -> int:
        return len(self._live)

    def share(self, tenant: str, weight: float) -> float:
        """``tenant``'s share of the queue, were it to send now with ``weight``."""
        others = self._total_weight - self._weights.get(tenant, 0.0)
        return self._max_queue * weight / (others + weight)

    def check(self, tenant: str, weight: float, count: int = 1) -> None:
        """503 ``overloaded`` if ``count`` more inputs of ``tenant`` would be refused now;
        nothing is counted. Asked before a request's inputs are tokenized, so a tenant over
        its share is refused before it costs the tokenizer anything."""
        after = self._total + count
        within_share = self._live.get(tenant, 0) + count <= self.share(tenant, weight)
        if after > self._max_queue * CEILING or (after > self._max_queue and not within_share):
            raise overloaded(1.0)

    def admit(self, tenant: str, weight: float, count: int) -> None:
        """Count ``count`` inputs of ``tenant`` as live, or raise 503 ``overloaded``."""
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError(f"weight must be a positive number, got {weight!r}")
        self.check(tenant, weight, count)
        after = self._total + count
        self._total_weight += weight - self._weights.get(tenant, 0.0)
        self._weights[tenant] = weight
        self._live[tenant] = self._live.get(tenant, 0) + count
        self._total = after

    def release(self, tenant: str, count: int = 1) -> None:
        self._total -= count
        left = self._live[tenant] - count
        if left > 0:
            self._live[tenant] = left
            return
        del self._live[tenant]
        self._total_weight -= self._weights.pop(tenant)
        if not self._live:  # no float drift carried from one busy period to the next
            self._total_weight = 0.0
