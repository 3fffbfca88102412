"""Dynamic batching: one scheduler per model owns its queue and feeds the backend.

Concurrent requests are coalesced: an idle model waits at most ``wait_s`` for a batch to
fill, a busy model takes whatever queued up meanwhile. Each batch is the oldest queued
input plus the queued inputs closest to it in length, under a padded-token budget: inputs
are not padded to much longer ones, and the rest wait in a pool that new arrivals join, so
later batches match as well. The oldest input always goes next, so nothing starves. The
queue is bounded: past ``max_queue`` inputs, 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from embedgate.backends.base import Backend, Embedded, ModelInput, Vectors
from embedgate.errors import EmbedgateError, overloaded
from embedgate.services.metrics import Metrics

log = logging.getLogger("embedgate.batching")

CANDIDATE_BATCHES = 4  # a batch is chosen among the oldest max_batch_size * this inputs
# Padding is compute spent on nothing (CPU time, or GPU time at load): an input joins a batch
# only while at most this share of the padded batch is padding.
MAX_PADDING = 0.25


class Scheduler(Protocol):
    @property
    def queue_depth(self) -> int: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def submit(self, inputs: Sequence[ModelInput]) -> Embedded: ...


@dataclass(eq=False, slots=True)
class _Item:
    input: ModelInput
    future: asyncio.Future[Vectors]
    enqueued: float = field(default_factory=time.monotonic)


def select_batch(
    candidates: Sequence[_Item], max_size: int, max_tokens: int
) -> tuple[list[_Item], list[_Item]]:
    """The first (oldest) candidate and those closest to it in length, while the batch stays
    within ``max_size`` inputs and, padded to its longest input, within ``max_tokens`` tokens
    of which at most ``MAX_PADDING`` are padding.

    Returns the batch and the candidates left over, in their original order."""
    anchor = candidates[0].input.n_tokens
    by_distance = sorted(
        range(1, len(candidates)),
        key=lambda i: (abs(candidates[i].input.n_tokens - anchor), i),
    )
    chosen = {0}
    longest = real = anchor
    for index in by_distance:
        if len(chosen) >= max_size:
            break
        n_tokens = candidates[index].input.n_tokens
        padded = max(longest, n_tokens) * (len(chosen) + 1)
        if padded <= max_tokens and real + n_tokens >= (1 - MAX_PADDING) * padded:
            chosen.add(index)
            longest = max(longest, n_tokens)
            real += n_tokens
    batch = [candidates[i] for i in sorted(chosen)]
    rest = [item for i, item in enumerate(candidates) if i not in chosen]
    return batch, rest


class BatchScheduler:
    def __init__(
        self,
        name: str,
        backend: Backend,
        metrics: Metrics,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        wait_s: float,
        max_queue: int,
    ) -> None:
        self._name = name
        self._backend = backend
        self._metrics = metrics
        self._max_size = max_batch_size
        self._max_tokens = max_batch_tokens
        self._wait_s = wait_s
        self._max_queue = max_queue
        self._pending: deque[_Item] = deque()
        self._live = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def queue_depth(self) -> int:
        return self._live

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"batcher-{self._name}")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        _fail(self._pending, _shutting_down())

    async def submit(self, inputs: Sequence[ModelInput]) -> Embedded:
        if self._live + len(inputs) > self._max_queue:
            raise overloaded(1.0)
        loop = asyncio.get_running_loop()
        items = [_Item(inp, loop.create_future()) for inp in inputs]
        for item in items:
            item.future.add_done_callback(self._on_done)
        self._live += len(items)
        self._pending.extend(items)
        self._wakeup.set()
        try:
            rows = await asyncio.gather(*(item.future for item in items))
        except BaseException:
            for item in items:
                item.future.cancel()
            raise
        return Embedded(np.stack(rows), sum(inp.n_tokens for inp in inputs))

    def _on_done(self, _: asyncio.Future[Vectors]) -> None:
        self._live -= 1

    async def _run(self) -> None:
        while True:
            await self._wait_for_work()
            batch = self._next_batch()
            if batch:
                await self._execute(batch)

    async def _wait_for_work(self) -> None:
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = self._pending[0].enqueued + self._wait_s
        while not self._batch_full():
            delay = deadline - time.monotonic()
            if delay <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()

    def _batch_full(self) -> bool:
        if len(self._pending) >= self._max_size:
            return True
        longest = max(item.input.n_tokens for item in self._pending)
        return longest * len(self._pending) >= self._max_tokens

    def _next_batch(self) -> list[_Item]:
        candidates: list[_Item] = []
        while self._pending and len(candidates) < self._max_size * CANDIDATE_BATCHES:
            item = self._pending.popleft()
            if not item.future.done():  # skip inputs whose request was cancelled
                candidates.append(item)
        if not candidates:
            return []
        batch, rest = select_batch(candidates, self._max_size, self._max_tokens)
        self._pending.extendleft(reversed(rest))
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        try:
            result = await self._backend.embed([item.input for item in batch])
        except asyncio.CancelledError:  # shutdown while this batch ran: answer, don't hang
            _fail(batch, _shutting_down())
            raise
        except Exception as exc:
            _fail(batch, exc if isinstance(exc, EmbedgateError) else _inference_failed(exc))
            return
        self._metrics.inference.labels(self._name).observe(time.perf_counter() - started)
        self._metrics.batch_size.labels(self._name).observe(len(batch))
        for item, row in zip(batch, result.vectors, strict=True):
            if not item.future.done():
                item.future.set_result(row)


class PassthroughScheduler:
    """For backends that batch on their own (upstream engines): bound the load, no merging."""

    def __init__(self, name: str, backend: Backend, metrics: Metrics, *, max_queue: int) -> None:
        self._name = name
        self._backend = backend
        self._metrics = metrics
        self._max_queue = max_queue
        self._live = 0

    @property
    def queue_depth(self) -> int:
        return self._live

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def submit(self, inputs: Sequence[ModelInput]) -> Embedded:
        if self._live + len(inputs) > self._max_queue:
            raise overloaded(1.0)
        self._live += len(inputs)
        started = time.perf_counter()
        try:
            result = await self._backend.embed(inputs)
        finally:
            self._live -= len(inputs)
        self._metrics.inference.labels(self._name).observe(time.perf_counter() - started)
        self._metrics.batch_size.labels(self._name).observe(len(inputs))
        return result


def _fail(items: Iterable[_Item], error: EmbedgateError) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(error)


def _shutting_down() -> EmbedgateError:
    return EmbedgateError(503, "The server is shutting down.", code="shutting_down")


def _inference_failed(exc: Exception) -> EmbedgateError:
    log.error("inference failed: %s", type(exc).__name__, exc_info=exc)
    return EmbedgateError(500, "The model failed to embed this batch.", code="inference_error")
