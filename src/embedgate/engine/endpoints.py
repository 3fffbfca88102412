"""The base URLs of one upstream model: what each has in flight, its window, its health.

Routing sends the next batch to the healthy URL with the least outstanding work (in-flight
inputs over its window), not round-robin: a slow or busy engine gets less, at once.

Health is passive, from the answers themselves: ``EJECT_AFTER`` failures in a row (resets,
5xx, timeouts), or one connection refused, eject a URL for ``COOLDOWN_S``, doubling up to
``MAX_COOLDOWN_S`` while it keeps failing. After the cooldown one request at a time probes
it; the first success brings it back. When every URL is ejected, the one whose cooldown
ends first is tried anyway (a last resort beats refusing every request).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from embedgate.engine.backends.base import Embedded, ModelInput
from embedgate.engine.window import AimdWindow
from embedgate.errors import EmbedgateError

EJECT_AFTER = 3
COOLDOWN_S = 5.0
MAX_COOLDOWN_S = 30.0
LATENCY_EWMA = 0.2


# Errors of an attempt that say the URL is unwell (beside UpstreamFailed): they fail the
# request without a retry, as before, but count towards ejecting the URL.
UNWELL_CODES = frozenset({"upstream_timeout", "upstream_error"})


class UpstreamRefused(Exception):
    """The engine refused the work for now (HTTP 429 or 503): try another, send less."""


class UpstreamFailed(Exception):
    """The engine failed in a way another one may not (connect error, reset, 5xx, timeout).
    The message names no URL: it may reach clients."""


class UpstreamUnreachable(UpstreamFailed):
    """Nothing accepted the connection: the URL is ejected at once, not after a few."""


@dataclass(frozen=True, slots=True)
class WindowConfig:
    minimum: int
    maximum: int
    initial: int
    tolerance: float = 1.0
    max_tokens: int | None = None  # a fixed bound on tokens in flight, beside the window


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
    max_tokens: int | None = None

    @property
    def room(self) -> int:
        """Inputs it may take now: none once its tokens in flight reach ``max_tokens``."""
        if self.max_tokens is not None and self.tokens >= self.max_tokens:
            return 0
        return max(0, self.window.limit - self.in_flight)

    @property
    def token_room(self) -> int | None:
        """Tokens it may take now, where they are bounded."""
        return None if self.max_tokens is None else max(0, self.max_tokens - self.tokens)

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
                                     tolerance=config.tolerance, clock=clock),
                     max_tokens=config.max_tokens)
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
        if ready:  # a URL whose cooldown is over first: else a quiet pool never probes it
            return min(ready, key=lambda e: (e.failures < EJECT_AFTER, e.load(), e.latency or 0.0))
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

    def failed(self, endpoint: Endpoint, *, at_once: bool = False) -> None:
        endpoint.failures = max(endpoint.failures + 1, EJECT_AFTER if at_once else 0)
        endpoint.errors["failed"] = endpoint.errors.get("failed", 0) + 1
        now = self._clock()
        # Requests sent before an ejection that fail after it are the same outage: they
        # neither lengthen the cooldown nor double the next; a failed probe does.
        if endpoint.failures >= EJECT_AFTER and endpoint.healthy(now):
            endpoint.ejected_until = now + endpoint.cooldown
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


Post = Callable[[str, Sequence[ModelInput]], Awaitable[Embedded]]


async def send(
    pool: EndpointPool, post: Post, first: Endpoint, inputs: Sequence[ModelInput], *,
    full: bool, retries: int,
) -> Embedded:  # fmt: skip
    """``inputs`` to ``first`` (counted there already; ``full``: its window had no room
    left then), and after a refusal or failure to the next URL, ``retries`` times."""
    tried: list[str] = []
    endpoint, failure = first, "no upstream tried"
    for attempt in range(1 + retries):
        if attempt:
            endpoint = pool.fallback(frozenset(tried))
            full = pool.sent(endpoint, len(inputs), sum(i.n_tokens for i in inputs))
        tried.append(endpoint.url)
        started = time.perf_counter()
        try:
            result = await post(endpoint.url, inputs)
        except UpstreamRefused as exc:
            pool.refused(endpoint)
            failure = str(exc)
            continue
        except UpstreamFailed as exc:
            pool.failed(endpoint, at_once=isinstance(exc, UpstreamUnreachable))
            failure = str(exc)
            continue
        except EmbedgateError as exc:
            if exc.code in UNWELL_CODES:
                pool.failed(endpoint)
            raise
        finally:
            pool.done(endpoint, len(inputs), sum(i.n_tokens for i in inputs))
        pool.succeeded(endpoint, len(inputs), time.perf_counter() - started, full=full)
        return result
    raise EmbedgateError(
        502, f"The upstream servers failed {len(tried)} attempt(s); last: {failure}.",
        code="upstream_error",
    )  # fmt: skip
