"""The per-address failure throttle, on a fake clock."""

from __future__ import annotations

import pytest

from embedgate.errors import EmbedgateError
from embedgate.tenancy import throttle as module
from embedgate.tenancy.throttle import FailureThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ten_failures_then_one_more_every_six_seconds() -> None:
    clock = Clock()
    throttle = FailureThrottle(10, clock)
    for _ in range(10):
        throttle.check("10.0.0.1")
        throttle.failed("10.0.0.1")
    with pytest.raises(EmbedgateError) as refused:
        throttle.check("10.0.0.1")
    assert (refused.value.status, refused.value.code) == (429, "rate_limit_exceeded")
    assert refused.value.headers["Retry-After"] == "6"
    throttle.check("10.0.0.2")  # another address is not affected
    clock.now += 6.0
    throttle.check("10.0.0.1")
    throttle.failed("10.0.0.1")
    with pytest.raises(EmbedgateError):
        throttle.check("10.0.0.1")
    clock.now += 60.0
    throttle.check("10.0.0.1")


def test_zero_disables_and_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    off = FailureThrottle(0)
    for _ in range(100):
        off.failed("10.0.0.1")
    off.check("10.0.0.1")
    monkeypatch.setattr(module, "TRACKED_ADDRESSES", 3)
    bounded = FailureThrottle(1)
    for i in range(10):
        bounded.failed(f"10.0.0.{i}")
    assert len(bounded._buckets) == 3
    bounded.check("10.0.0.0")  # forgotten: the oldest went first
    with pytest.raises(EmbedgateError):
        bounded.check("10.0.0.9")
