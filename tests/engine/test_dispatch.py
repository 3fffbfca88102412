"""The upstream scheduler: fair queuing in front of engines, windows, coalescing, routing,
failover; against an in-process engine (the HTTP side is tests/engine/backends/)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from embedgate.engine.backends.base import Embedded, ModelInput
from embedgate.engine.dispatch import UpstreamScheduler, shares
from embedgate.engine.endpoints import EndpointPool, UpstreamFailed, UpstreamRefused, WindowConfig
from embedgate.errors import EmbedgateError
from embedgate.observability.metrics import Metrics

pytestmark = pytest.mark.anyio


class Engine:
    """Engines at several URLs, FIFO each, ``per_input`` seconds of work per input and one
    batch at a time (a capacity-limited engine); what each call carried is recorded."""

    def __init__(self, urls: int = 1, per_input: float = 0.001) -> None:
        self.urls = [f"http://engine{i}/v1" for i in range(urls)]
        self.per_input = dict.fromkeys(self.urls, per_input)
        self.calls: list[tuple[str, list[int]]] = []  # url, first token id of each input
        self.fail: dict[str, type[Exception] | EmbedgateError] = {}
        self.reject_id: int | None = None  # a 400 for any request holding this first id
        self.busy = {url: asyncio.Lock() for url in self.urls}
        self.peak_in_flight = dict.fromkeys(self.urls, 0)
        self._in_flight = dict.fromkeys(self.urls, 0)
        self.pool = EndpointPool(self.urls, WindowConfig(1, 64, 8))
        self.max_retries = 2

    async def embed_at(self, url: str, inputs: Sequence[ModelInput]) -> Embedded:
        ids = [(item.token_ids or [0])[0] for item in inputs]
        self.calls.append((url, ids))
        failure = self.fail.get(url)
        if isinstance(failure, EmbedgateError):
            raise failure
        if failure is not None:
            raise failure("engine down")
        if self.reject_id is not None and self.reject_id in ids:
            raise EmbedgateError(400, "rejected", code="upstream_rejected")
        self._in_flight[url] += len(inputs)
        self.peak_in_flight[url] = max(self.peak_in_flight[url], self._in_flight[url])
        try:
            async with self.busy[url]:
                await asyncio.sleep(self.per_input[url] * len(inputs))
        finally:
            self._in_flight[url] -= len(inputs)
        rows = np.asarray([[float(i), 1.0] for i in ids], dtype=np.float32)
        return Embedded(rows, sum(item.n_tokens for item in inputs))


def item(first_id: int, n_tokens: int = 4) -> ModelInput:
    return ModelInput(None, [first_id] * n_tokens, n_tokens)


def scheduler(
    engine: Engine, window: WindowConfig | None = None, max_retries: int = 2, **overrides: Any
) -> UpstreamScheduler:
    engine.pool = EndpointPool(engine.urls, window or WindowConfig(1, 64, 8))
    engine.max_retries = max_retries
    options: dict[str, Any] = {"max_batch_size": 8, "max_queue": 10_000, **overrides}
    return UpstreamScheduler("m", engine, Metrics(), **options)


async def test_small_requests_of_several_tenants_travel_as_one_upstream_request() -> None:
    engine = Engine(per_input=0.01)
    s = scheduler(engine, window=WindowConfig(4, 4, 4))
    await s.start()
    try:
        first = asyncio.create_task(s.submit([item(1)] * 4, tenant="a"))  # fills the window
        await asyncio.sleep(0.002)
        rest = [asyncio.create_task(s.submit([item(10 + i)], tenant=f"t{i}")) for i in range(4)]
        await first  # room again: the four queued meanwhile go together
        results = await asyncio.gather(*rest)
    finally:
        await s.aclose()
    assert [r.vectors[0, 0] for r in results] == [10, 11, 12, 13]
    assert sorted(engine.calls[1][1]) == [10, 11, 12, 13]


async def test_a_large_request_is_split_into_max_batch_size_requests() -> None:
    engine = Engine(per_input=0.0)
    s = scheduler(engine, max_batch_size=4)
    await s.start()
    try:
        result = await s.submit([item(i) for i in range(10)], tenant="a")
    finally:
        await s.aclose()
    assert result.vectors[:, 0].tolist() == list(range(10))
    assert [len(ids) for _, ids in engine.calls] == [4, 4, 2]


async def test_the_window_bounds_what_the_engine_holds_and_the_queue_stays_here() -> None:
    engine = Engine(per_input=0.002)
    s = scheduler(engine, window=WindowConfig(4, 4, 4))
    await s.start()
    try:
        await asyncio.gather(*(s.submit([item(i)], tenant="flood") for i in range(40)))
    finally:
        await s.aclose()
    assert engine.peak_in_flight[engine.urls[0]] <= 4


async def test_a_token_bound_limits_what_is_in_flight_and_a_long_input_goes_alone() -> None:
    engine = Engine(per_input=0.002)
    s = scheduler(engine, window=WindowConfig(64, 64, 64, max_tokens=10))
    in_flight: list[int] = []  # tokens counted against the URL as each request leaves
    embed_at = engine.embed_at

    async def watched(url: str, inputs: Sequence[ModelInput]) -> Embedded:
        in_flight.append(s.pool.endpoints[0].tokens)
        return await embed_at(url, inputs)

    engine.embed_at = watched  # type: ignore[method-assign]
    await s.start()
    try:
        short = [s.submit([item(i, 4)], tenant=f"t{i % 3}") for i in range(9)]
        results = await asyncio.gather(*short, s.submit([item(99, 25)], tenant="long"))
    finally:
        await s.aclose()
    assert len(results) == 10
    tokens = {i: 25 if i == 99 else 4 for i in range(100)}
    sent = [sum(tokens[i] for i in ids) for _, ids in engine.calls]
    assert max(sent) == 25  # the long one, alone
    assert [ids for _, ids in engine.calls if 99 in ids] == [[99]]
    assert all(total <= 10 for total in sent if total != 25)
    assert max(in_flight) == 25  # the long one with nothing beside it
    assert all(tokens <= 10 for tokens in in_flight if tokens != 25)
    assert s.pool.endpoints[0].tokens == 0


async def test_a_light_tenant_goes_ahead_of_a_flood_backlog() -> None:
    engine = Engine(per_input=0.002)
    s = scheduler(engine, window=WindowConfig(4, 4, 4), max_batch_size=4)
    await s.start()
    try:
        flood = [asyncio.create_task(s.submit([item(1)] * 8, tenant="flood")) for _ in range(20)]
        await asyncio.sleep(0.02)
        started = asyncio.get_running_loop().time()
        await s.submit([item(2)], tenant="light")
        light_wait = asyncio.get_running_loop().time() - started
        assert not all(task.done() for task in flood)  # the backlog was still there
        await asyncio.gather(*flood)
    finally:
        await s.aclose()
    # behind at most the window in flight and the next batch, not 160 inputs (0.32 s)
    assert light_wait < 0.1


async def test_priorities_share_a_saturated_engine_by_weight() -> None:
    engine = Engine(per_input=0.001)
    s = scheduler(engine, window=WindowConfig(4, 4, 4), max_batch_size=4)
    await s.start()
    served = {"hi": 0, "lo": 0}
    stop = asyncio.Event()

    async def client(tenant: str, weight: float) -> None:
        while not stop.is_set():
            await s.submit([item(1)] * 4, tenant=tenant, weight=weight)
            served[tenant] += 4

    try:
        clients = [asyncio.create_task(client(t, w)) for t, w in [("hi", 4.0), ("lo", 1.0)] * 8]
        await asyncio.sleep(0.2)
        start = dict(served)  # from here on both are backlogged
        await asyncio.sleep(0.6)
        end = dict(served)  # before the backlog drains
        stop.set()
        await asyncio.gather(*clients)
    finally:
        await s.aclose()
    hi, lo = (end[t] - start[t] for t in ("hi", "lo"))
    assert 3.6 <= hi / lo <= 4.4


async def test_a_cancelled_request_leaves_the_queue() -> None:
    engine = Engine(per_input=0.02)
    s = scheduler(engine, window=WindowConfig(1, 1, 1))
    await s.start()
    try:
        first = asyncio.create_task(s.submit([item(1)], tenant="a"))
        await asyncio.sleep(0.005)
        doomed = asyncio.create_task(s.submit([item(2)] * 5, tenant="b"))
        await asyncio.sleep(0.001)
        doomed.cancel()
        await first
        await s.submit([item(3)], tenant="c")
    finally:
        await s.aclose()
    assert [ids for _, ids in engine.calls] == [[1], [3]]
    assert s.queue_depth == 0


async def test_a_refusing_engine_is_retried_elsewhere_and_its_window_shrinks() -> None:
    engine = Engine(urls=2, per_input=0.0)
    engine.fail[engine.urls[0]] = UpstreamRefused
    s = scheduler(engine, window=WindowConfig(1, 64, 16))
    await s.start()
    try:
        results = await asyncio.gather(*(s.submit([item(i)], tenant="a") for i in range(20)))
    finally:
        await s.aclose()
    assert len(results) == 20
    refused = s.pool.endpoints[0]
    assert refused.window.limit < 16
    assert refused.errors["refused"] >= 1


async def test_a_dead_engine_is_ejected_and_traffic_moves_to_the_rest() -> None:
    engine = Engine(urls=2, per_input=0.001)
    dead, alive = engine.urls
    engine.fail[dead] = UpstreamFailed
    s = scheduler(engine)
    await s.start()
    try:
        for i in range(30):
            await s.submit([item(i)], tenant="a")
    finally:
        await s.aclose()
    to_dead = [call for call in engine.calls if call[0] == dead]
    assert len(to_dead) == 3  # the failures that ejected it, then nothing (cooldown)
    assert s.status()[dead]["healthy"] is False
    assert s.status()[alive]["healthy"] is True


async def test_every_attempt_failing_answers_502_after_the_retries() -> None:
    engine = Engine(urls=1)
    engine.fail[engine.urls[0]] = UpstreamFailed
    s = scheduler(engine, max_retries=2)
    await s.start()
    try:
        with pytest.raises(EmbedgateError) as caught:
            await s.submit([item(1)], tenant="a")
    finally:
        await s.aclose()
    assert caught.value.status == 502
    assert caught.value.code == "upstream_error"
    assert len(engine.calls) == 3


async def test_one_tenants_rejected_input_fails_only_its_own_request() -> None:
    engine = Engine(per_input=0.01)
    engine.reject_id = 66
    s = scheduler(engine, window=WindowConfig(2, 2, 2))
    await s.start()
    try:
        first = asyncio.create_task(s.submit([item(1)] * 2, tenant="a"))
        await asyncio.sleep(0.002)
        good = asyncio.create_task(s.submit([item(2)], tenant="b"))
        bad = asyncio.create_task(s.submit([item(66)], tenant="c"))
        await first  # the two go together, are rejected, then each goes alone
        assert (await good).vectors[0, 0] == 2
        with pytest.raises(EmbedgateError) as caught:
            await bad
    finally:
        await s.aclose()
    assert caught.value.code == "upstream_rejected"
    assert [sorted(ids) for _, ids in engine.calls[1:]] == [[2, 66], [2], [66]]


async def test_a_slow_engine_shrinks_its_window_and_queued_requests_wait_instead_of_failing() -> (
    None
):
    engine = Engine(per_input=0.0005)
    s = scheduler(engine, window=WindowConfig(1, 64, 32), max_batch_size=8)
    await s.start()
    try:
        for _ in range(5):  # the engine's base latency, at its normal speed
            await s.submit([item(1)] * 8, tenant="a")
        engine.per_input[engine.urls[0]] = 0.01  # 20x slower
        results = await asyncio.gather(
            *(s.submit([item(2)] * 8, tenant=t) for t in ("a", "b", "c") for _ in range(6))
        )
    finally:
        await s.aclose()
    assert len(results) == 18  # nothing timed out or failed while queued
    assert s.pool.endpoints[0].window.limit < 32


def test_an_engines_token_count_is_shared_by_the_requests_of_its_batch() -> None:
    inputs = [item(1, 3), item(2, 1), item(3, 6)]
    assert shares(10, inputs) == [3, 1, 6]  # as counted: exactly each one's own
    assert sum(shares(13, inputs)) == 13
    assert shares(13, inputs)[2] >= shares(13, inputs)[0] >= shares(13, inputs)[1]
