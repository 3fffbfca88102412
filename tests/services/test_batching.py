"""The batch scheduler: coalescing, length sorting, budgets, backpressure, deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from embedgate.backends.base import BackendInfo, Embedded, ModelInput
from embedgate.errors import EmbedgateError
from embedgate.services.batching import BatchScheduler, PassthroughScheduler, _Item, select_batch
from embedgate.services.metrics import Metrics

pytestmark = pytest.mark.anyio


class RecordingBackend:
    """Deterministic vectors (first component = the input's first token id), batches recorded.

    ``gate`` holds inference until the test releases it, to build up a queue on purpose."""

    coalesce = True

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.gate: asyncio.Event | None = None
        self.fail_with: Exception | None = None

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            dimensions=4, max_tokens=512, family="generic", vocab_size=None, device="cpu"
        )

    async def embed(self, inputs: Sequence[ModelInput]) -> Embedded:
        self.batches.append([item.n_tokens for item in inputs])
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        rows = [[float((item.token_ids or [0])[0]), 1.0, 0.0, 0.0] for item in inputs]
        return Embedded(np.asarray(rows, dtype=np.float32), sum(i.n_tokens for i in inputs))

    async def start(self) -> None: ...
    async def aclose(self) -> None: ...
    def can_tokenize(self) -> bool:
        return True

    async def tokenize(self, texts: Sequence[str], truncate_to: int | None) -> list[list[int]]:
        return [[len(t)] for t in texts]

    def health(self) -> dict[str, Any]:
        return {"ready": True}


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


async def test_passthrough_bounds_the_inputs_in_flight() -> None:
    backend = RecordingBackend()
    backend.gate = asyncio.Event()
    sched = PassthroughScheduler("up", backend, Metrics(), max_queue=3)
    first = asyncio.create_task(sched.submit([item(1), item(2)]))
    await asyncio.sleep(0.01)
    assert sched.queue_depth == 2
    with pytest.raises(EmbedgateError) as refused:
        await sched.submit([item(3), item(4)])
    assert refused.value.status == 503
    backend.gate.set()
    assert (await first).vectors.shape == (2, 4)
    assert sched.queue_depth == 0


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
