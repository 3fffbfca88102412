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
A request's inputs count from before they are tokenized (``reserve``), so that a tenant
over its share is refused before it costs the tokenizer anything, and many requests of one
tenant arriving at once cannot all pass a check that only one of them fits.
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

    def holds(self, tenant: str) -> int:
        """How many inputs ``tenant`` has reserved, queued or in flight."""
        return self._live.get(tenant, 0)

    @property
    def tenants_tracked(self) -> int:
        return len(self._live)

    def share(self, tenant: str, weight: float) -> float:
        """``tenant``'s share of the queue, were it to send now with ``weight``."""
        others = self._total_weight - self._weights.get(tenant, 0.0)
        return self._max_queue * weight / (others + weight)

    def check(self, tenant: str, weight: float, count: int = 1) -> None:
        """503 ``overloaded`` if ``count`` more inputs of ``tenant`` would be refused now;
        nothing is counted."""
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

    def enqueue(
        self, tenant: str, weight: float, count: int, reservation: Reservation | None
    ) -> None:
        """``count`` inputs of ``tenant`` go into the queue: counted from now on, or handed
        over from the ``reservation`` that counted them before they were tokenized."""
        if reservation is None:
            self.admit(tenant, weight, count)
        else:
            reservation.hand_over(count)

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


class Reservation:
    """A request's inputs, counted as live from before they are tokenized until they are
    queued (``hand_over``) or the request ends (``close``)."""

    def __init__(self, shares: QueueShares, tenant: str, weight: float, count: int) -> None:
        if count:  # nothing to count (and no tenant entry to leave behind) for no inputs
            shares.admit(tenant, weight, count)
        self._shares, self.tenant, self.count = shares, tenant, count

    def hand_over(self, queued: int) -> None:
        """``queued`` of the inputs go into the queue, which releases them one by one as they
        are answered; the rest (answered from the cache) are released now."""
        if queued > self.count:
            raise ValueError(f"{queued} inputs queued on a reservation of {self.count}")
        self.count -= queued
        self.close()

    def close(self) -> None:
        if self.count:
            self._shares.release(self.tenant, self.count)
            self.count = 0

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
