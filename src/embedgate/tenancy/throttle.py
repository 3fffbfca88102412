"""Failed key guesses, throttled per client address.

Each address has a token bucket of ``per_minute`` failures that refills at ``per_minute``
a minute. A failed tenant key, admin key, gateway secret or console login takes a token;
an address with none left gets 429 before its key is looked at, valid or not, so guessing
stops and the throttle tells nothing about the key. Successes cost nothing. Addresses are
kept in an LRU of ``TRACKED_ADDRESSES``; the buckets live in this process (with several
replicas each throttles on its own).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from embedgate.errors import EmbedgateError

TRACKED_ADDRESSES = 10_000
WINDOW_S = 60.0


def throttled(retry_after: float) -> EmbedgateError:
    seconds = str(max(1, math.ceil(retry_after)))
    return EmbedgateError(
        429,
        "Too many failed authentication attempts from your address; retry after the time "
        "in Retry-After.",
        code="rate_limit_exceeded",
        headers={"Retry-After": seconds, "retry-after-ms": str(int(retry_after * 1000))},
    )


class FailureThrottle:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(per_minute)  # 0: no throttle
        self._rate = per_minute / WINDOW_S
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def check(self, client_ip: str | None) -> None:
        """429 for an address that has no failures left (before any key is checked)."""
        if not self._capacity:
            return
        bucket = self._buckets.get(client_ip or "unknown")
        if bucket is None:
            return
        tokens = self._refilled(bucket)
        if tokens < 1.0:
            raise throttled((1.0 - tokens) / self._rate)

    def failed(self, client_ip: str | None) -> None:
        if not self._capacity:
            return
        address = client_ip or "unknown"
        bucket = self._buckets.pop(address, None)
        tokens = self._capacity if bucket is None else self._refilled(bucket)
        self._buckets[address] = (max(0.0, tokens - 1.0), self._clock())
        while len(self._buckets) > TRACKED_ADDRESSES:
            self._buckets.popitem(last=False)

    def _refilled(self, bucket: tuple[float, float]) -> float:
        tokens, at = bucket
        return min(self._capacity, tokens + (self._clock() - at) * self._rate)
