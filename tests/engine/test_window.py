"""The AIMD window of an upstream URL, and the pool's routing and passive health."""

from __future__ import annotations

import pytest

from embedgate.engine.endpoints import COOLDOWN_S, EJECT_AFTER, EndpointPool, WindowConfig
from embedgate.engine.window import EPOCH_S, AimdWindow


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_window_grows_while_full_and_as_fast_as_when_idle() -> None:
    clock = Clock()
    window = AimdWindow(2, 64, initial=4, clock=clock)
    for _ in range(40):
        clock.now += 0.01
        window.completed(4, 0.010, full=True)
    assert window.limit > 8  # +1 input per window of completed inputs


def test_the_window_does_not_grow_when_it_was_not_full() -> None:
    window = AimdWindow(2, 64, initial=4, clock=Clock())
    for _ in range(100):
        window.completed(4, 0.010, full=False)
    assert window.limit == 4


def test_queueing_at_the_engine_shrinks_the_window_once_per_base_latency() -> None:
    clock = Clock()
    window = AimdWindow(2, 64, initial=32, clock=clock)
    window.completed(8, 0.010, full=False)  # the base for 8 inputs: 10 ms
    window.completed(8, 0.050, full=True)  # 5x the base: queueing
    assert window.limit == 24
    window.completed(8, 0.050, full=True)  # the same moment: no second cut
    assert window.limit == 24
    clock.now += 0.011
    window.completed(8, 0.050, full=True)
    assert window.limit == 18


def test_bases_are_per_size_so_a_big_batch_is_not_taken_for_queueing() -> None:
    window = AimdWindow(2, 64, initial=16, clock=Clock())
    window.completed(1, 0.002, full=False)
    window.completed(16, 0.030, full=True)  # first of its size: sets its own base
    window.completed(16, 0.031, full=True)
    assert window.limit >= 16


def test_refusals_halve_down_to_the_minimum_and_growth_stops_at_the_maximum() -> None:
    clock = Clock()
    window = AimdWindow(3, 10, initial=10, clock=clock)
    for _ in range(5):
        clock.now += 1
        window.overloaded()
    assert window.limit == 3
    for _ in range(200):
        window.completed(3, 0.001, full=True)
    assert window.limit == 10


def test_a_base_follows_an_engine_that_got_slower_for_good() -> None:
    clock = Clock()
    window = AimdWindow(2, 64, initial=8, clock=clock)
    window.completed(4, 0.010, full=False)
    for _ in range(3):  # two epochs later the old 10 ms base is forgotten
        clock.now += EPOCH_S
        window.completed(4, 0.040, full=False)
    before = window.limit
    window.completed(4, 0.041, full=True)
    assert window.limit >= before


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="1 <= min <= max"):
        AimdWindow(0, 4)


def pool(urls: int, clock: Clock, initial: int = 4) -> EndpointPool:
    return EndpointPool([f"http://e{i}/v1" for i in range(urls)], WindowConfig(1, 64, initial),
                        clock)  # fmt: skip


def test_routing_picks_the_least_outstanding_work_not_the_next_in_turn() -> None:
    p = pool(3, Clock())
    a, b, c = p.endpoints
    p.sent(a, 3, 30)
    p.sent(b, 1, 10)
    assert p.pick() is c
    p.sent(c, 2, 20)
    assert p.pick() is b
    p.sent(b, 3, 30)
    assert p.pick() is c  # b is full; c has more room than a
    p.sent(c, 2, 20)
    assert p.pick() is a
    p.sent(a, 1, 10)
    assert p.pick() is None  # every window full: wait for room


def test_consecutive_failures_eject_then_one_probe_brings_it_back() -> None:
    clock = Clock()
    p = pool(2, clock)
    bad, good = p.endpoints
    for _ in range(EJECT_AFTER):
        p.failed(bad)
    for _ in range(4):  # ejected: everything goes to the other URL
        assert p.pick() is good
        p.sent(good, 1, 1)
    assert p.pick() is None  # the other URL is full: wait, do not send to the ejected one
    clock.now += COOLDOWN_S
    p.done(good, 4, 4)
    p.sent(good, 4, 4)
    assert p.pick() is bad  # cooldown over: a probe
    p.sent(bad, 1, 1)
    assert p.pick() is None  # one probe at a time; good is full
    p.done(bad, 1, 1)
    p.succeeded(bad, 1, 0.01, full=False)
    assert bad.failures == 0
    assert bad.healthy(clock.now)


def test_a_probe_that_fails_ejects_for_twice_as_long() -> None:
    clock = Clock()
    p = pool(1, clock)
    (e,) = p.endpoints
    for _ in range(EJECT_AFTER):
        p.failed(e)
    clock.now += COOLDOWN_S
    p.failed(e)
    assert e.ejected_until == pytest.approx(clock.now + 2 * COOLDOWN_S)


def test_a_quiet_pool_probes_a_url_as_soon_as_its_cooldown_is_over() -> None:
    """Not only when the others are busier: with little traffic it would never be."""
    clock = Clock()
    p = pool(2, clock)
    bad, good = p.endpoints
    p.succeeded(bad, 1, 0.010, full=False)
    p.succeeded(good, 1, 0.001, full=False)  # the faster one, and idle
    p.failed(bad, at_once=True)
    assert p.pick() is good
    clock.now += COOLDOWN_S
    assert p.pick() is bad


def test_requests_in_flight_that_fail_after_the_ejection_do_not_lengthen_it() -> None:
    """An engine dies with many requests in flight: one outage, one cooldown."""
    clock = Clock()
    p = pool(1, clock)
    (e,) = p.endpoints
    p.failed(e, at_once=True)  # connection refused
    for _ in range(10):  # the others, sent before, failing one by one
        clock.now += 0.01
        p.failed(e)
    assert e.ejected_until == pytest.approx(100.0 + COOLDOWN_S)
    clock.now = e.ejected_until
    p.failed(e)  # the probe fails: now twice as long
    assert e.ejected_until == pytest.approx(clock.now + 2 * COOLDOWN_S)


def test_with_every_url_ejected_the_one_back_soonest_is_tried_as_a_last_resort() -> None:
    clock = Clock()
    p = pool(2, clock)
    first, second = p.endpoints
    for _ in range(EJECT_AFTER):
        p.failed(second)
    clock.now += 1
    for _ in range(EJECT_AFTER):
        p.failed(first)
    assert p.pick() is second
    assert p.status()[second.url]["healthy"] is False
