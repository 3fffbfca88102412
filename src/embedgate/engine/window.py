"""How many inputs one upstream engine may have in flight: an AIMD window on its latency.

The queue, and so the fairness between tenants, lives in embedgate only while the engine's
own queue stays short: whatever embedgate has sent is served in the engine's order (FIFO,
in SGLang, vLLM and TEI). So the window grows while the engine answers as fast as when it
is idle (it has spare capacity), and shrinks when its answers slow down (requests are
queueing inside it) or when it refuses work (429, 503).

"As fast as when idle" is measured per size: requests of 1, 2-3, 4-7, ... inputs each have
a base latency, the least seen in the last two epochs of ``EPOCH_S`` (so a base follows an
engine that got slower for good, within a minute). A completion more than ``tolerance``
times its base late means queueing: the window shrinks by ``DECREASE``, at most once per
base latency, so one slow burst does not collapse it. Otherwise, if the window was full
when the request left, it grows by one input per window of completed inputs (additive
increase). Bounds: ``minimum`` and ``maximum`` inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DECREASE = 0.75  # on queueing at the engine
BACK_OFF = 0.5  # on 429 / 503: the engine said so
EPOCH_S = 30.0
SLACK_S = 0.002  # latency noise below this is never queueing


class AimdWindow:
    def __init__(
        self,
        minimum: int,
        maximum: int,
        *,
        initial: int | None = None,
        tolerance: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(
                f"window bounds must satisfy 1 <= min <= max, got {minimum}, {maximum}"
            )
        self._min, self._max = minimum, maximum
        self._value = float(min(max(initial or minimum, minimum), maximum))
        self._tolerance = tolerance
        self._clock = clock
        self._base: dict[int, float] = {}  # size bucket -> least latency, this epoch
        self._previous: dict[int, float] = {}  # ... the epoch before
        self._epoch_started = clock()
        self._decreased_at = -float("inf")

    @property
    def limit(self) -> int:
        return int(self._value)

    def base_latency(self, inputs: int) -> float | None:
        bucket = inputs.bit_length()
        seen = [b[bucket] for b in (self._base, self._previous) if bucket in b]
        return min(seen) if seen else None

    def completed(self, inputs: int, latency: float, *, full: bool) -> None:
        """A request of ``inputs`` answered after ``latency`` seconds; ``full``: the window
        had no room left when it was sent (only then is more room worth trying)."""
        now = self._clock()
        self._roll(now)
        base = self.base_latency(inputs)
        bucket = inputs.bit_length()
        self._base[bucket] = min(latency, self._base.get(bucket, latency))
        if base is not None and latency > base * (1 + self._tolerance) + SLACK_S:
            self._shrink(DECREASE, now, base)
        elif full:
            self._value = min(self._max, self._value + inputs / max(self._value, 1.0))

    def overloaded(self) -> None:
        """The engine refused work (429, 503): halve, at most once per base latency."""
        now = self._clock()
        self._shrink(BACK_OFF, now, self.base_latency(1) or 0.0)

    def _shrink(self, factor: float, now: float, base: float) -> None:
        if now - self._decreased_at < base:
            return
        self._decreased_at = now
        self._value = max(float(self._min), self._value * factor)

    def _roll(self, now: float) -> None:
        if now - self._epoch_started >= EPOCH_S:
            self._previous, self._base = self._base, {}
            self._epoch_started = now
