"""The base URLs of one upstream model: what each has in flight, its window, its health.

Routing sends the next batch to the healthy URL with the least outstanding work (in-flight
inputs over its window), not round-robin: a slow or busy engine gets less, at once.

Health is passive, from the answers themselves: ``EJECT_AFTER`` failures in a row (connect
errors, resets, 5xx, timeouts) eject a URL for ``COOLDOWN_S``, doubling up to
``MAX_COOLDOWN_S`` while it keeps failing. After the cooldown one request at a time probes
it; the first success brings it back. When every URL is ejected, the one whose cooldown
ends first is tried anyway (a last resort beats refusing every request).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from embedgate.engine.window import AimdWindow

EJECT_AFTER = 3
COOLDOWN_S = 5.0
MAX_COOLDOWN_S = 60.0
LATENCY_EWMA = 0.2


class UpstreamRefused(Exception):
    """The engine refused the work for now (HTTP 429 or 503): try another, send less."""


class UpstreamFailed(Exception):
    """The engine failed in a way another one may not (connect error, reset, 5xx, timeout).
    The message names no URL: it may reach clients."""


@dataclass(frozen=True, slots=True)
class WindowConfig:
    minimum: int
    maximum: int
    initial: int
    tolerance: float = 1.0


@dataclass(eq=False)
class Endpoint:
    url: str
    window: AimdWindow
    in_flight: int = 0  # inputs
    requests: int = 0
    tokens: int = 0
    failures: int = 0  # in a row
    ejected_until: float = 0.0
    cooldown: float = COOLDOWN_S
    latency: float | None = None  # EWMA of seconds per request
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def room(self) -> int:
        return max(0, self.window.limit - self.in_flight)

    def healthy(self, now: float) -> bool:
        return self.ejected_until <= now

    def load(self) -> float:
        return self.in_flight / max(self.window.limit, 1)


class EndpointPool:
    def __init__(
        self, urls: Sequence[str], config: WindowConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._clock = clock
        self.endpoints = [
            Endpoint(url, AimdWindow(config.minimum, config.maximum, initial=config.initial,
                                     tolerance=config.tolerance, clock=clock))
            for url in urls
        ]  # fmt: skip

    def pick(self, exclude: frozenset[str] = frozenset()) -> Endpoint | None:
        """The healthy URL with room and the least outstanding work; a URL whose cooldown
        is over takes one probe at a time; None when no URL may take more now."""
        now = self._clock()
        open_ = [e for e in self.endpoints if e.url not in exclude and e.room > 0]
        ready = [
            e for e in open_ if e.healthy(now) and (e.failures < EJECT_AFTER or e.requests == 0)
        ]
        if ready:
            return min(ready, key=lambda e: (e.load(), e.latency or 0.0))
        if any(e.healthy(now) for e in self.endpoints if e.url not in exclude):
            return None  # healthy ones are only full: wait for room
        idle = [e for e in open_ if e.requests == 0]  # every URL ejected: the last resort
        return min(idle, key=lambda e: e.ejected_until) if idle else None

    def fallback(self, tried: frozenset[str]) -> Endpoint:
        """Where a retry goes: a URL not tried yet, healthy first, least loaded first,
        room or not (the attempt was admitted already); with one URL, that one again."""
        now = self._clock()
        return min(self.endpoints, key=lambda e: (e.url in tried, not e.healthy(now), e.load()))

    def sent(self, endpoint: Endpoint, inputs: int, tokens: int) -> bool:
        """Count a request against ``endpoint``; whether its window is now full."""
        endpoint.in_flight += inputs
        endpoint.requests += 1
        endpoint.tokens += tokens
        return endpoint.room == 0

    def done(self, endpoint: Endpoint, inputs: int, tokens: int) -> None:
        endpoint.in_flight -= inputs
        endpoint.requests -= 1
        endpoint.tokens -= tokens

    def succeeded(self, endpoint: Endpoint, inputs: int, latency: float, *, full: bool) -> None:
        endpoint.failures = 0
        endpoint.ejected_until = 0.0
        endpoint.cooldown = COOLDOWN_S
        endpoint.window.completed(inputs, latency, full=full)
        last = endpoint.latency
        endpoint.latency = latency if last is None else last + LATENCY_EWMA * (latency - last)

    def refused(self, endpoint: Endpoint) -> None:
        endpoint.window.overloaded()
        endpoint.errors["refused"] = endpoint.errors.get("refused", 0) + 1

    def failed(self, endpoint: Endpoint) -> None:
        endpoint.failures += 1
        endpoint.errors["failed"] = endpoint.errors.get("failed", 0) + 1
        if endpoint.failures >= EJECT_AFTER:
            endpoint.ejected_until = self._clock() + endpoint.cooldown
            endpoint.cooldown = min(MAX_COOLDOWN_S, endpoint.cooldown * 2)

    def any_healthy(self) -> bool:
        now = self._clock()
        return any(e.healthy(now) for e in self.endpoints)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per URL, for /admin/system and /metrics."""
        now = self._clock()
        return {
            e.url: {
                "healthy": e.healthy(now), "in_flight": e.in_flight, "requests": e.requests,
                "window": e.window.limit,
                "latency_ms": round(1000 * e.latency, 3) if e.latency is not None else None,
                "failures_in_a_row": e.failures, "errors": dict(e.errors),
            }
            for e in self.endpoints
        }  # fmt: skip
