"""The batch scheduler: coalescing, length sorting, budgets, backpressure, deadlines,
fair queuing across tenants."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from embedgate.engine.backends.base import Embedded, ModelInput
from embedgate.engine.dispatch import UpstreamScheduler
from embedgate.engine.queue_shares import QueueShares, Reservation
from embedgate.engine.scheduler import (
    BatchScheduler,
    PendingPool,
    _Item,
    select_batch,
)
from embedgate.errors import EmbedgateError
from embedgate.observability.metrics import Metrics
from tests.engine.backends.fake import FakeUpstream, PipelinedBackend, RecordingBackend

pytestmark = pytest.mark.anyio


def item(first_id: int, n_tokens: int = 4) -> ModelInput:
    return ModelInput(None, [first_id] * n_tokens, n_tokens)


def scheduler(backend: RecordingBackend, **overrides: Any) -> BatchScheduler:
    options: dict[str, Any] = {
        "max_batch_size": 8, "max_batch_tokens": 10_000, "wait_s": 0.01, "max_queue": 100,
        **overrides,
    }  # fmt: skip
    return BatchScheduler("m", backend, Metrics(), **options)


async def test_concurrent_requests_are_coalesced_and_keep_their_rows() -> None:
    backend = RecordingBackend()
    sched = scheduler(backend)
    await sched.start()
    results = await asyncio.gather(*(sched.submit([item(i)]) for i in range(8)))
    await sched.aclose()
    assert [r.vectors[0, 0] for r in results] == list(range(8))
    assert backend.batches == [[4] * 8]  # one batch, not eight


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_next_full_batch_is_handed_over_while_one_runs() -> None:
    """Pipelined: the model finds the next batch queued when one ends, and only one."""
    backend = PipelinedBackend()
    backend.gate = asyncio.Event()
    sched = scheduler(backend)
    await sched.start()
    first = [asyncio.create_task(sched.submit([item(1)])) for _ in range(8)]
    await settle()
    assert backend.handed == 1  # running, held by the gate
    second = [asyncio.create_task(sched.submit([item(2)])) for _ in range(8)]
    await settle()
    assert backend.handed == 2  # full: queued behind the running batch at once
    third = [asyncio.create_task(sched.submit([item(3)])) for _ in range(8)]
    await asyncio.sleep(0.05)
    assert backend.handed == 2  # one running, one queued: the third waits in the pool
    backend.gate.set()
    results = await asyncio.gather(*first, *second, *third)
    await sched.aclose()
    assert backend.ids == [[1] * 8, [2] * 8, [3] * 8]
    assert [r.vectors[0, 0] for r in results] == [1] * 8 + [2] * 8 + [3] * 8


async def test_a_next_batch_not_full_waits_for_the_running_one_and_gathers_meanwhile() -> None:
    backend = PipelinedBackend()
    backend.gate = asyncio.Event()
    sched = scheduler(backend)
    await sched.start()
    first = [asyncio.create_task(sched.submit([item(1)])) for _ in range(8)]
    await settle()
    early = [asyncio.create_task(sched.submit([item(2)])) for _ in range(3)]
    await asyncio.sleep(0.05)  # five times wait_s
    assert backend.handed == 1  # not handed over half empty
    late = [asyncio.create_task(sched.submit([item(3)])) for _ in range(2)]
    await settle()
    assert backend.handed == 1
    backend.gate.set()
    await asyncio.gather(*first, *early, *late)
    await sched.aclose()
    assert backend.ids == [[1] * 8, [2, 2, 2, 3, 3]]  # all that arrived while it ran


async def test_a_lone_request_waits_at_most_the_batch_wait() -> None:
    backend = RecordingBackend()
    sched = scheduler(backend, wait_s=0.05)
    await sched.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sched.submit([item(1)])
    elapsed = loop.time() - started
    await sched.aclose()
    assert 0.04 <= elapsed < 1.0


async def test_a_full_batch_does_not_wait() -> None:
    backend = RecordingBackend()
    sched = scheduler(backend, wait_s=5.0, max_batch_size=4)
    await sched.start()
    result = await asyncio.wait_for(sched.submit([item(i) for i in range(4)]), timeout=2)
    await sched.aclose()
    assert result.vectors.shape == (4, 4)


async def test_select_batch_groups_by_length_around_the_oldest() -> None:
    loop = asyncio.get_running_loop()
    lengths = [10, 2, 11, 30, 9, 3, 12, 2]
    items = [_Item(item(i, n), loop.create_future()) for i, n in enumerate(lengths)]
    batch, rest = select_batch(items, max_size=8, max_tokens=40)
    # The oldest (10 tokens) and its nearest lengths: 11 and 9 give 3 x 11 = 33 padded
    # tokens; adding 12 (4 x 12) or 3 (4 x 11) would pass the budget of 40.
    assert [b.input.n_tokens for b in batch] == [10, 11, 9]
    assert [r.input.n_tokens for r in rest] == [2, 30, 3, 12, 2]  # still in arrival order
    batch, rest = select_batch(rest, max_size=8, max_tokens=40)
    assert [b.input.n_tokens for b in batch] == [2, 3, 2]  # 12 would make 4 x 12 = 48
    # rest is [30, 12]: padding 12 to 30 would make 30 % of the batch padding (> 25 %).
    alone, rest = select_batch(rest, max_size=8, max_tokens=1000)
    assert [b.input.n_tokens for b in alone] == [30]
    equal = [_Item(item(i, 7), loop.create_future()) for i in range(5)]
    capped, left = select_batch(equal, max_size=2, max_tokens=1000)
    assert (len(capped), len(left)) == (2, 3)


async def test_queued_inputs_are_batched_with_their_neighbours_in_length() -> None:
    backend = RecordingBackend()
    backend.gate = asyncio.Event()
    sched = scheduler(backend, max_batch_size=8, max_batch_tokens=40, wait_s=0)
    await sched.start()
    blocker = asyncio.create_task(sched.submit([item(0, 1)]))
    await asyncio.sleep(0.01)  # the model is now busy with the blocker
    lengths = [30, 2, 10, 3, 10, 2]
    pending = asyncio.create_task(sched.submit([item(i, n) for i, n in enumerate(lengths)]))
    await asyncio.sleep(0.01)
    backend.gate.set()
    result = await pending
    await blocker
    await sched.aclose()
    # The oldest (30) cannot share 40 padded tokens; the 2s take the 3 but not a 10 (mostly
    # padding), and the two 10s go together.
    assert backend.batches[1:] == [[30], [2, 3, 2], [10, 10]]
    assert [row[0] for row in result.vectors] == list(range(6))  # original order restored


async def test_full_queue_answers_503_with_retry_after() -> None:
    backend = RecordingBackend()
    backend.gate = asyncio.Event()
    sched = scheduler(backend, max_queue=5, wait_s=0)
    await sched.start()
    first = asyncio.create_task(sched.submit([item(i) for i in range(4)]))
    await asyncio.sleep(0.01)
    with pytest.raises(EmbedgateError) as refused:
        await sched.submit([item(9), item(10)])
    assert refused.value.status == 503
    assert refused.value.code == "overloaded"
    assert refused.value.headers["Retry-After"] == "1"
    assert sched.queue_depth == 4
    backend.gate.set()
    await first
    assert sched.queue_depth == 0
    await sched.aclose()


async def test_a_full_queue_refuses_the_tenant_over_its_share_not_the_others() -> None:
    backend = RecordingBackend()
    backend.gate = asyncio.Event()
    sched = scheduler(backend, max_queue=8, wait_s=0)
    await sched.start()
    flood = [asyncio.create_task(sched.submit([item(i) for i in range(4)], tenant="a"))
             for i in range(2)]  # fmt: skip
    await asyncio.sleep(0.01)
    assert sched.queue_depth == 8  # full, all of it a's
    light = [asyncio.create_task(sched.submit([item(20 + i)], tenant="b")) for i in range(4)]
    await asyncio.sleep(0.01)
    assert sched.queue_depth == 12  # b's share is 8 * 1/2: its 4 inputs are admitted
    with pytest.raises(EmbedgateError) as over:  # the 5th is past b's share
        await sched.submit([item(30)], tenant="b")
    assert (over.value.status, over.value.code) == (503, "overloaded")
    with pytest.raises(EmbedgateError) as flooder:  # a holds 8, its share is now 4
        await sched.submit([item(31)], tenant="a")
    assert (flooder.value.status, flooder.value.code) == (503, "overloaded")
    backend.gate.set()
    results = await asyncio.gather(*flood, *light)
    assert [r.vectors[0, 0] for r in results[2:]] == [20, 21, 22, 23]
    assert sched.queue_depth == 0
    assert sched._shares.tenants_tracked == 0  # nothing kept once the queue is empty
    await sched.aclose()


async def test_the_queue_share_follows_the_weight() -> None:
    backend = RecordingBackend()
    backend.gate = asyncio.Event()
    sched = scheduler(backend, max_queue=12, wait_s=0)
    await sched.start()
    flood = asyncio.create_task(sched.submit([item(i) for i in range(12)], tenant="a"))
    await asyncio.sleep(0.01)
    # b weighs 2 against a's 1: its share is 12 * 2/3 = 8 inputs, c's (weight 1) 12 * 1/4.
    heavy = asyncio.create_task(sched.submit([item(i) for i in range(8)], tenant="b",
                                             weight=2.0))  # fmt: skip
    await asyncio.sleep(0.01)
    with pytest.raises(EmbedgateError):
        await sched.submit([item(1)] * 4, tenant="c")
    light = asyncio.create_task(sched.submit([item(1)] * 3, tenant="c"))
    await asyncio.sleep(0.01)
    assert sched.queue_depth == 23
    backend.gate.set()
    await asyncio.gather(flood, heavy, light)
    await sched.aclose()


async def test_the_queue_never_holds_more_than_twice_its_bound() -> None:
    backend = RecordingBackend()
    backend.gate = asyncio.Event()
    sched = scheduler(backend, max_queue=12, wait_s=0)
    await sched.start()
    tasks = [asyncio.create_task(sched.submit([item(0)] * 12, tenant="t0"))]
    # Each newcomer's share (12 / n with n tenants) is admitted in full: 12 + 6 + 4 = 22 ...
    for n, share in [(1, 6), (2, 4)]:
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(sched.submit([item(n)] * share, tenant=f"t{n}")))
    await asyncio.sleep(0.01)
    assert sched.queue_depth == 22
    with pytest.raises(EmbedgateError) as refused:  # ... but not 3 more: past 2 x 12
        await sched.submit([item(3)] * 3, tenant="t3")
    assert refused.value.code == "overloaded"
    tasks.append(asyncio.create_task(sched.submit([item(3)] * 2, tenant="t3")))
    await asyncio.sleep(0.01)
    assert sched.queue_depth == 24
    backend.gate.set()
    await asyncio.gather(*tasks)
    await sched.aclose()


async def test_an_invalid_weight_is_refused_before_anything_is_queued() -> None:
    sched = scheduler(RecordingBackend())
    await sched.start()
    with pytest.raises(ValueError, match="weight"):
        await sched.submit([item(1)], tenant="a", weight=0.0)
    assert sched.queue_depth == 0
    await sched.aclose()


async def test_cancelled_requests_are_skipped_and_free_the_queue() -> None:
    backend = RecordingBackend()
    backend.gate = asyncio.Event()
    sched = scheduler(backend, wait_s=0)
    await sched.start()
    busy = asyncio.create_task(sched.submit([item(0)]))
    await asyncio.sleep(0.01)
    abandoned = asyncio.create_task(sched.submit([item(1), item(2)]))
    await asyncio.sleep(0.01)
    abandoned.cancel()
    await asyncio.sleep(0)
    assert sched.queue_depth == 1
    backend.gate.set()
    await busy
    await sched.submit([item(3)])
    await sched.aclose()
    assert [1] * 2 not in backend.batches  # the abandoned inputs never reached the model
    assert backend.batches == [[4], [4]]


async def test_backend_errors_reach_every_waiting_request() -> None:
    backend = RecordingBackend()
    backend.fail_with = RuntimeError("CUDA out of memory")
    sched = scheduler(backend)
    await sched.start()
    outcomes = await asyncio.gather(
        sched.submit([item(1)]), sched.submit([item(2)]), return_exceptions=True
    )
    await sched.aclose()
    for outcome in outcomes:
        assert isinstance(outcome, EmbedgateError)
        assert outcome.status == 500
        assert outcome.code == "inference_error"
        assert "CUDA" not in outcome.message
    # The scheduler survives a failed batch.
    backend.fail_with = None
    sched2 = scheduler(backend)
    await sched2.start()
    assert (await sched2.submit([item(5)])).vectors[0, 0] == 5
    await sched2.aclose()


async def test_batch_size_one_disables_batching() -> None:
    backend = RecordingBackend(delay=0.001)
    sched = scheduler(backend, max_batch_size=1)
    await sched.start()
    await asyncio.gather(*(sched.submit([item(i)]) for i in range(5)))
    await sched.aclose()
    assert backend.batches == [[4]] * 5


def upstream(backend: FakeUpstream, max_queue: int) -> UpstreamScheduler:
    return UpstreamScheduler("up", backend, Metrics(), max_batch_size=64, max_queue=max_queue)


async def test_upstream_bounds_the_inputs_queued_and_in_flight() -> None:
    backend = FakeUpstream()
    backend.gate = asyncio.Event()
    sched = upstream(backend, max_queue=3)
    await sched.start()
    first = asyncio.create_task(sched.submit([item(1), item(2)]))
    await asyncio.sleep(0.01)
    assert sched.queue_depth == 2
    with pytest.raises(EmbedgateError) as refused:
        await sched.submit([item(3), item(4)])
    assert refused.value.status == 503
    backend.gate.set()
    assert (await first).vectors.shape == (2, 4)
    assert sched.queue_depth == 0
    await sched.aclose()


async def test_upstream_refuses_the_tenant_over_its_share_not_the_others() -> None:
    backend = FakeUpstream()
    backend.gate = asyncio.Event()
    sched = upstream(backend, max_queue=4)
    await sched.start()
    flood = asyncio.create_task(sched.submit([item(i) for i in range(4)], tenant="a"))
    await asyncio.sleep(0.01)
    with pytest.raises(EmbedgateError):  # a is past its share of a full queue
        await sched.submit([item(5)], tenant="a")
    light = asyncio.create_task(sched.submit([item(6), item(7)], tenant="b"))  # share 2
    await asyncio.sleep(0.01)
    assert sched.queue_depth == 6
    backend.gate.set()
    assert (await light).vectors.shape == (2, 4)
    await flood
    assert sched.queue_depth == 0
    await sched.aclose()


@pytest.mark.parametrize("kind", ["batch", "upstream"])
async def test_a_reservation_counts_from_before_tokenizing_until_the_inputs_are_answered(
    kind: str,
) -> None:
    backend = FakeUpstream()
    backend.gate = asyncio.Event()
    sched: BatchScheduler | UpstreamScheduler = (
        scheduler(backend, max_queue=4, wait_s=0) if kind == "batch"
        else upstream(backend, max_queue=4)
    )  # fmt: skip
    await sched.start()
    room = sched.reserve("a", 1.0, 4)  # a request of 4 inputs, about to be tokenized
    assert sched.queue_depth == 4
    with pytest.raises(EmbedgateError) as refused:  # a second one of a, before tokenizing
        sched.reserve("a", 1.0, 1)
    assert (refused.value.status, refused.value.code) == (503, "overloaded")
    sched.reserve("b", 1.0, 2).close()  # b under its share: room; closed, nothing held
    assert sched.queue_depth == 4
    with room:  # 3 of the 4 inputs queued (one came from the cache): that one is let go
        task = asyncio.create_task(
            sched.submit([item(i) for i in range(3)], tenant="a", reservation=room)
        )
        await asyncio.sleep(0.01)
    assert sched.queue_depth == 3  # the queued inputs count until they are answered
    backend.gate.set()
    await task
    assert sched.queue_depth == 0
    with sched.reserve("a", 1.0, 4):  # the queue drained: a has room again
        pass
    assert sched.queue_depth == 0  # a reservation left unused is released
    await sched.aclose()


async def test_shutdown_answers_queued_and_running_requests() -> None:
    backend = RecordingBackend()
    backend.gate = asyncio.Event()  # never released: the first batch is stuck in the model
    sched = scheduler(backend, max_batch_size=1, wait_s=0)
    await sched.start()
    running = asyncio.create_task(sched.submit([item(1)]))
    queued = asyncio.create_task(sched.submit([item(2)]))
    await asyncio.sleep(0.01)
    await sched.aclose()
    for task in (running, queued):
        with pytest.raises(EmbedgateError) as error:
            await asyncio.wait_for(task, timeout=1)
        assert (error.value.status, error.value.code) == (503, "shutting_down")


@pytest.mark.parametrize(("fair", "light_batch"), [(True, 1), (False, -1)])
async def test_a_flood_delays_another_tenant_by_one_batch_when_fair(
    fair: bool, light_batch: int
) -> None:
    backend = RecordingBackend()
    backend.gate = asyncio.Event()
    sched = scheduler(backend, wait_s=0, max_queue=1000, fair=fair)
    await sched.start()
    heavy = asyncio.create_task(sched.submit([item(i) for i in range(200)], tenant="heavy"))
    await asyncio.sleep(0.01)  # the heavy tenant's first batch is in the model, 192 queued
    light = asyncio.create_task(sched.submit([item(1000)], tenant="light"))
    await asyncio.sleep(0.01)
    backend.gate.set()
    await asyncio.gather(heavy, light)
    await sched.aclose()
    assert len(backend.ids) == 26  # 201 inputs, 8 a batch
    # Fair: right after the batch that was running; fifo: behind the whole backlog.
    assert 1000 in backend.ids[light_batch]
    heavy_order = [i for batch in backend.ids for i in batch if i != 1000]
    assert heavy_order == list(range(200))  # a tenant's own inputs keep their order


async def test_backlogged_tenants_share_the_model_by_weight() -> None:
    backend = RecordingBackend()
    backend.gate = asyncio.Event()
    sched = scheduler(backend, wait_s=0, max_queue=1000)
    await sched.start()
    blocker = asyncio.create_task(sched.submit([item(0)], tenant="other"))
    await asyncio.sleep(0.01)
    gold = asyncio.create_task(
        sched.submit([item(1000 + i) for i in range(120)], tenant="gold", weight=3.0)
    )
    free = asyncio.create_task(sched.submit([item(2000 + i) for i in range(120)], tenant="free"))
    await asyncio.sleep(0.01)
    backend.gate.set()
    await asyncio.gather(blocker, gold, free)
    await sched.aclose()
    first_80 = [i for batch in backend.ids[1:11] for i in batch]
    gold_share = sum(1 for i in first_80 if i < 2000)
    assert 58 <= gold_share <= 62  # 3:1 while both are backlogged (fifo would give 80:0)
    assert set(backend.ids[-1]) <= set(range(2000, 2120))  # free catches up at the end


async def test_fifo_mode_keeps_the_order_of_arrival_across_tenants() -> None:
    backend = RecordingBackend()
    backend.gate = asyncio.Event()
    sched = scheduler(backend, wait_s=0, fair=False)
    await sched.start()
    blocker = asyncio.create_task(sched.submit([item(0)], tenant="a"))
    await asyncio.sleep(0.01)
    tasks = [
        asyncio.create_task(sched.submit([item(10 * r + i) for i in range(3)], tenant=t, weight=w))
        for r, (t, w) in enumerate([("a", 1.0), ("b", 5.0), ("a", 1.0), ("c", 0.5)], start=1)
    ]
    await asyncio.sleep(0.01)
    backend.gate.set()
    await asyncio.gather(blocker, *tasks)
    await sched.aclose()
    assert [i for batch in backend.ids for i in batch] == [
        0, 10, 11, 12, 20, 21, 22, 30, 31, 32, 40, 41, 42
    ]  # fmt: skip


async def test_fair_tags_are_per_token_so_long_inputs_buy_no_extra_share() -> None:
    loop = asyncio.get_running_loop()
    pool = PendingPool(fair=True)
    long_inputs = [_Item(item(100 + i, 40), loop.create_future()) for i in range(5)]
    short_inputs = [_Item(item(200 + i, 10), loop.create_future()) for i in range(20)]
    pool.add(long_inputs, "long", 1.0)
    pool.add(short_inputs, "short", 1.0)
    order = [i.input.n_tokens for i in pool.take(25)]
    # Four short inputs cost as much as one long one, so they alternate 1 long : 4 short.
    assert order[:10] == [40, 10, 10, 10, 10, 40, 10, 10, 10, 10]


async def test_tags_of_idle_tenants_are_forgotten() -> None:
    loop = asyncio.get_running_loop()
    pool = PendingPool(fair=True)

    def add(tenant: str, n: int) -> None:
        pool.add([_Item(item(1), loop.create_future()) for _ in range(n)], tenant, 1.0)

    add("heavy", 50)
    for t in range(500):  # many tenants, one input each, while the heavy backlog lasts
        add(f"t{t}", 1)
        pool.dispatched(pool.take(2), [])
        if len(pool) < 10:
            add("heavy", 50)
    assert pool.tenants_tracked <= 3  # heavy, and the one or two tenants just served
    pool.dispatched(pool.take(len(pool)), [])
    assert pool.tenants_tracked == 0  # idle: everyone starts level


@pytest.mark.parametrize("weight", [1.0, 2.0])
async def test_a_tenant_back_from_idle_goes_ahead_by_its_burst_then_shares(weight: float) -> None:
    loop = asyncio.get_running_loop()
    pool = PendingPool(fair=True, burst=40)

    def add(tenant: str, first: int, n: int, w: float = 1.0) -> None:
        items = [_Item(item(first + i), loop.create_future()) for i in range(n)]
        pool.add(items, tenant, w)

    add("heavy", 0, 200)
    pool.dispatched(pool.take(20), [])  # past its own credit: V moved on
    add("light", 1000, 60, weight)
    order = [i.input.token_ids[0] for i in pool.take(40)]  # type: ignore[index]
    ahead = 10 * int(weight)  # 40 tokens of credit, 4 tokens an input, scaled by the weight
    assert order[:ahead] == list(range(1000, 1000 + ahead))  # ahead of the backlog
    rest = order[ahead:]
    light_share = sum(1 for i in rest if i >= 1000) / len(rest)
    assert light_share == pytest.approx(weight / (weight + 1), abs=0.07)  # then by weight


async def test_the_burst_is_earned_back_only_as_the_others_are_served() -> None:
    loop = asyncio.get_running_loop()
    pool = PendingPool(fair=True, burst=40)
    pool.add([_Item(item(i), loop.create_future()) for i in range(400)], "heavy", 1.0)
    pool.dispatched(pool.take(20), [])  # past its own credit: V moved on
    light_first: list[int] = []
    for r in range(30):  # a closed loop: the next request as soon as the last is served
        pool.add([_Item(item(1000 + r), loop.create_future()) for _ in range(10)], "light", 1.0)
        batch = pool.take(10)
        pool.dispatched(batch, [])
        light_first.append(sum(1 for i in batch if i.tenant == "light"))
    served = sum(light_first)
    assert light_first[0] == 10  # the first request went ahead whole
    assert served <= 150 + 10  # after that about half of each batch: the weights' share


async def test_weights_must_be_positive() -> None:
    sched = scheduler(RecordingBackend())
    await sched.start()
    for weight in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="weight"):
            await sched.submit([item(1)], tenant="t", weight=weight)
    assert sched.queue_depth == 0
    await sched.aclose()


async def test_two_backlogged_tenants_keep_full_batches() -> None:
    backend = RecordingBackend()
    backend.gate = asyncio.Event()
    sched = scheduler(backend, max_batch_size=64, max_batch_tokens=64, wait_s=0, max_queue=1000)
    await sched.start()
    blocker = asyncio.create_task(sched.submit([item(0)], tenant="a"))
    await asyncio.sleep(0.01)
    floods = [asyncio.create_task(sched.submit([item(1)] * 50, tenant=t)) for t in ("a", "b")]
    await asyncio.sleep(0.01)
    backend.gate.set()
    await asyncio.gather(blocker, *floods)
    await sched.aclose()
    assert [len(b) for b in backend.batches[1:4]] == [16, 16, 16]


class TwoLanes(RecordingBackend):
    """Two model calls may run at once; batches holding token id 1 (the heavy tenant's)
    wait for ``gate``, so a heavy batch can be held running on purpose."""

    lanes = 2

    async def embed(self, inputs: Sequence[ModelInput], *, lane: int = 0) -> Embedded:
        self.batches.append([item.n_tokens for item in inputs])
        if self.gate is not None and any((i.token_ids or [0])[0] == 1 for i in inputs):
            await self.gate.wait()
        rows = [[float((i.token_ids or [0])[0]), 1.0, 0.0, 0.0] for i in inputs]
        return Embedded(np.asarray(rows, dtype=np.float32), sum(i.n_tokens for i in inputs))


async def held_heavy_batch(
    backend: RecordingBackend, fair: bool = True
) -> tuple[BatchScheduler, asyncio.Task[Embedded]]:
    """A scheduler whose model is busy with a heavy batch that does not finish."""
    backend.gate = asyncio.Event()
    sched = scheduler(backend, max_batch_size=8, max_batch_tokens=64, wait_s=0,
                      max_queue=1000, fair=fair)  # fmt: skip
    await sched.start()
    heavy = asyncio.create_task(sched.submit([item(1)] * 20, tenant="heavy"))
    await asyncio.sleep(0.01)
    assert backend.batches, "the heavy batch should be running"
    return sched, heavy


async def test_a_quiet_tenant_runs_in_the_express_lane_beside_a_running_batch() -> None:
    backend = TwoLanes()
    sched, heavy = await held_heavy_batch(backend)
    async with asyncio.timeout(1):  # answered while the heavy batch is still held
        light = await sched.submit([item(0)], tenant="light")
    assert light.vectors[0][0] == 0.0
    assert backend.batches == [[4] * 8, [4]]  # the held batch, and the express one
    assert not heavy.done()
    backend.gate.set()  # type: ignore[union-attr]
    await heavy
    await sched.aclose()


@pytest.mark.parametrize("case", ["busy tenant", "large request", "fifo", "one lane"])
async def test_the_express_lane_is_only_for_small_requests_of_quiet_tenants(case: str) -> None:
    backend = RecordingBackend() if case == "one lane" else TwoLanes()
    sched, heavy = await held_heavy_batch(backend, fair=case != "fifo")
    tenant = "heavy" if case == "busy tenant" else "light"
    # 5 x 4 tokens: over a quarter of the 64-token budget
    inputs = [item(0)] * (5 if case == "large request" else 1)
    waiting = asyncio.create_task(sched.submit(inputs, tenant=tenant))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # queued behind the held batch
    backend.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(heavy, waiting)
    await sched.aclose()


def test_a_reservation_of_no_inputs_leaves_no_tenant_behind() -> None:
    shares = QueueShares(4)
    with Reservation(shares, "t", 1.0, 0):
        pass
    assert (shares.total, shares.tenants_tracked) == (0, 0)
    with Reservation(shares, "t", 1.0, 2) as room:
        assert (shares.total, shares.holds("t")) == (2, 2)
        room.hand_over(1)  # one queued: the queue releases it when answered
    assert (shares.total, shares.tenants_tracked) == (1, 1)
    shares.release("t")
    assert (shares.total, shares.tenants_tracked) == (0, 0)
