"""Dynamic batching: one scheduler per model owns its queue and feeds the backend.

Concurrent requests are coalesced: an idle model waits at most ``wait_s`` for a batch to
fill, a busy model takes whatever queued up meanwhile. Each batch is the first input in
line plus the queued inputs closest to it in length, under a padded-token budget: inputs
are not padded to much longer ones, and the rest wait in a pool that new arrivals join, so
later batches match as well. The first input in line always goes next, so nothing starves.
The queue is bounded: past ``max_queue`` inputs, 503 to a tenant over its weighted share
of the queue, never to one under it (``QueueShares``); a request's inputs count from
before they are tokenized (``reserve``).

The line is a weighted fair queue across tenants (``PendingPool``): a tenant that floods
the queue delays another tenant's input by at most about one batch, not by its whole
backlog. And a batch, once started, cannot be interrupted, so a small request of a tenant
with nothing else queued or in flight does not even wait for that: it runs at once in the
express lane, a second model call beside the running batch (backends with ``lanes >= 2``).
With ``fair=False`` the line is the order of arrival and there is no express lane.

With a pipelined backend (the in-process model), the next batch is formed while one runs,
as soon as it is full, and handed over to wait behind it in the model's own thread: the
model goes from one batch to the next without waiting for the event loop, however busy
that is with HTTP. See docs/scheduling.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from embedgate.engine.backends.base import Backend, Embedded, ModelInput, Vectors
from embedgate.engine.queue_shares import QueueShares, Reservation
from embedgate.errors import EmbedgateError
from embedgate.observability.metrics import Metrics

log = logging.getLogger("embedgate.batching")

CANDIDATE_BATCHES = 4  # a batch is chosen among the first max_batch_size * this in line
# Padding is compute spent on nothing (CPU time, or GPU time at load): an input joins a batch
# only while at most this share of the padded batch is padding.
MAX_PADDING = 0.25
# A tenant back from idle may go ahead of a backlog by this many batches' worth of tokens
# (PendingPool's burst): a light tenant's request is then served about as fast as alone.
BURST_BATCHES = 4
# Batches handed to a pipelined backend at once: the one running and the next, queued.
PIPELINE_DEPTH = 2


class Scheduler(Protocol):
    @property
    def queue_depth(self) -> int: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def submit(
        self,
        inputs: Sequence[ModelInput],
        *,
        tenant: str = "",
        weight: float = 1.0,
        reservation: Reservation | None = None,
    ) -> Embedded:
        """The inputs' vectors; they count against the tenant's share of the queue through
        ``reservation`` (made before they were tokenized), or from now on without one."""
        ...

    def reserve(self, tenant: str, weight: float, count: int) -> Reservation:
        """Count ``count`` inputs of ``tenant`` against the queue now, or 503 ``overloaded``."""
        ...


@dataclass(eq=False, slots=True)
class _Item:
    input: ModelInput
    future: asyncio.Future[Vectors]
    enqueued: float = field(default_factory=time.monotonic)
    tag: float = 0.0  # start tag in virtual time when fair; always 0 in fifo mode
    seq: int = 0  # arrival order: breaks ties
    tenant: str = ""
    request: int = 0  # which request it belongs to (an upstream batch may hold several)
    tokens: int = 0  # its share of what an upstream engine counted for its batch

    def __lt__(self, other: _Item) -> bool:
        return (self.tag, self.seq) < (other.tag, other.seq)


def _cost(item: _Item) -> int:
    return max(item.input.n_tokens, 1)


class PendingPool:
    """Queued inputs as a heap, in the order they are served: by (start tag, arrival).

    Fair mode is start-time fair queuing with one tag per input. An input of tenant t gets
    the start tag ``S = max(V, F[t])`` and moves t's finish tag on to
    ``F[t] = S + n_tokens / weight``; V, the virtual time, is how far the front of the line
    has been served (the last tag of the batches taken that no queued input is behind). So
    a tenant's inputs follow one another, spaced by their cost, and a tenant that was idle
    starts level with the next input due, however long the others' backlog. Cost is
    tokens, not inputs, because compute grows with tokens: long inputs buy a tenant no more
    of the model than short ones. In fifo mode every tag is 0, and the order is arrival.

    ``burst`` is the credit of a tenant that used less than its share, in virtual time: its
    start tag may lie up to ``burst`` behind V (``S = max(V - burst, F[t])``), so a light
    tenant's request of up to ``burst * weight`` tokens goes ahead of a backlog instead of
    sharing the model with it input by input (which would make it about twice as slow as
    alone). Tenants back from idle together start level and share by weight. The credit is
    earned back only as V moves on, so over time the shares stay those of the weights; a
    backlogged tenant waits for at most ``burst * weight`` tokens of each tenant that
    comes back."""

    def __init__(self, fair: bool, burst: int = 0) -> None:
        self._fair = fair
        self._burst = float(burst)
        self._heap: list[_Item] = []
        self._arrivals = itertools.count()
        self._vtime = 0.0
        self._finish: dict[str, float] = {}  # F[t], kept only while ahead of V - burst

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[_Item]:
        return iter(self._heap)

    @property
    def tenants_tracked(self) -> int:
        return len(self._finish)

    def add(self, items: Sequence[_Item], tenant: str, weight: float) -> None:
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError(f"weight must be a positive number, got {weight!r}")
        floor = self._vtime - self._burst
        tag = max(floor, self._finish.get(tenant, floor))
        for item in items:
            item.seq, item.tenant = next(self._arrivals), tenant
            if self._fair:
                item.tag, tag = tag, tag + _cost(item) / weight
            heapq.heappush(self._heap, item)
        if self._fair:
            self._finish[tenant] = tag

    def take(self, limit: int) -> list[_Item]:
        """Up to ``limit`` inputs from the front of the line, in order, dropping those
        already answered (their request was cancelled)."""
        taken: list[_Item] = []
        while self._heap and len(taken) < limit:
            item = heapq.heappop(self._heap)
            if not item.future.done():
                taken.append(item)
        return taken

    def put_back(self, items: Iterable[_Item]) -> None:
        for item in items:
            heapq.heappush(self._heap, item)

    def dispatched(self, batch: Sequence[_Item], rest: Sequence[_Item]) -> None:
        """``batch`` left the pool, ``rest`` (in order) went back: advance virtual time."""
        if not self._fair:
            return
        if not self._heap:  # no backlog left to be fair about: every tenant starts level
            self._vtime = 0.0
            self._finish.clear()
            return
        # Not past an input still queued, so a tenant that arrives now goes before it; and
        # never back (a tenant's credit puts its tags behind V).
        behind = rest[0].tag if rest else math.inf
        served = [item.tag for item in batch if item.tag <= behind]
        self._vtime = max([self._vtime, *served])
        # A finish tag at or behind the credit floor changes nothing (S = max(V - burst, F));
        # dropping those bounds the map by the tenants with inputs queued or just served.
        floor = self._vtime - self._burst
        self._finish = {t: f for t, f in self._finish.items() if f > floor}

    def oldest_arrival(self) -> float:
        return min(item.enqueued for item in self._heap)


def select_batch(
    candidates: Sequence[_Item], max_size: int, max_tokens: int
) -> tuple[list[_Item], list[_Item]]:
    """The first candidate and those closest to it in length, while the batch stays
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
        fair: bool = True,
    ) -> None:
        self._name = name
        self._backend = backend
        self._metrics = metrics
        self._max_size = max_batch_size
        self._max_tokens = max_batch_tokens
        self._wait_s = wait_s
        self._shares = QueueShares(max_queue)
        self._pending = PendingPool(fair, burst=BURST_BATCHES * max_batch_tokens)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The express lane: a second model call beside a running batch, for a tenant with
        # nothing else queued or in flight, so that it does not wait for another's batch.
        self._express_lane = fair and backend.lanes >= 2
        self._express_tokens = max(1, max_batch_tokens // 4)
        self._express: asyncio.Task[None] | None = None
        self._depth = PIPELINE_DEPTH if backend.pipelined else 1
        self._ahead: list[asyncio.Task[None]] = []  # bulk batches running or queued, in order
        self._bulk_ended = 0.0  # when the last bulk batch ended (perf_counter)

    @property
    def queue_depth(self) -> int:
        return self._shares.total

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"batcher-{self._name}")

    async def aclose(self) -> None:
        for task in (self._task, self._express, *self._ahead):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        _fail(self._pending, _shutting_down())

    def reserve(self, tenant: str, weight: float, count: int) -> Reservation:
        return Reservation(self._shares, tenant, weight, count)

    async def submit(
        self,
        inputs: Sequence[ModelInput],
        *,
        tenant: str = "",
        weight: float = 1.0,
        reservation: Reservation | None = None,
    ) -> Embedded:
        own = reservation.count if reservation is not None else 0
        express = self._takes_express(tenant, inputs, own)  # before its inputs count as live
        self._shares.enqueue(tenant, weight, len(inputs), reservation)  # checks the weight
        loop = asyncio.get_running_loop()
        items = [_Item(inp, loop.create_future()) for inp in inputs]
        if express:
            self._express = loop.create_task(self._execute(items, lane=1), name="express-batch")
        else:
            self._pending.add(items, tenant, weight)
            self._wakeup.set()
        for item in items:
            item.future.add_done_callback(functools.partial(self._on_done, tenant))
        try:
            rows = await asyncio.gather(*(item.future for item in items))
        except BaseException:
            for item in items:
                item.future.cancel()
            raise
        return Embedded(np.stack(rows), sum(inp.n_tokens for inp in inputs))

    def _on_done(self, tenant: str, _: asyncio.Future[Vectors]) -> None:
        self._shares.release(tenant)

    def _takes_express(self, tenant: str, inputs: Sequence[ModelInput], own: int) -> bool:
        """A small request of a tenant with nothing else queued or in flight (``own``: the
        inputs this request reserved), while others' inputs are running or queued and the
        express lane is free: it runs at once, beside their batch, instead of in (or
        behind) a full batch of theirs."""
        return (
            self._express_lane
            and (any(not task.done() for task in self._ahead) or len(self._pending) > 0)
            and (self._express is None or self._express.done())
            and self._shares.holds(tenant) <= own
            and len(inputs) <= self._max_size
            and sum(inp.n_tokens for inp in inputs) <= self._express_tokens
        )

    async def _run(self) -> None:
        while True:
            self._ahead = [task for task in self._ahead if not task.done()]
            if len(self._ahead) >= self._depth:
                await asyncio.wait(self._ahead[:1])
                continue
            await self._wait_for_work()
            if self._ahead and not await self._full_while_running():
                continue
            batch = self._next_batch()
            if batch:
                task = asyncio.create_task(self._execute(batch), name="batch")
                self._ahead.append(task)

    async def _full_while_running(self) -> bool:
        """With a batch running: whether the next one filled up before it ended (it is
        then queued behind it at once); else it is formed, as without a pipeline, when
        the running one has ended, from all that arrived meanwhile."""
        running = self._ahead[0]
        while not running.done():
            if self._batch_full():
                return True
            self._wakeup.clear()
            await self._wakeup.wait()  # arrivals, or a batch ended (``_execute``)
        return False

    async def _wait_for_work(self) -> None:
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        while not self._batch_full():
            # Counted from the oldest arrival, wherever it stands in line: no input waits
            # more than wait_s for a batch to fill.
            delay = self._pending.oldest_arrival() + self._wait_s - time.monotonic()
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
        candidates = self._pending.take(self._max_size * CANDIDATE_BATCHES)
        if not candidates:
            return []
        batch, rest = select_batch(candidates, self._max_size, self._max_tokens)
        self._pending.put_back(rest)
        self._pending.dispatched(batch, rest)
        return batch

    async def _execute(self, batch: list[_Item], lane: int = 0) -> None:
        started = time.perf_counter()
        try:
            result = await self._backend.embed([item.input for item in batch], lane=lane)
        except asyncio.CancelledError:  # shutdown while this batch ran: answer, don't hang
            _fail(batch, _shutting_down())
            raise
        except Exception as exc:
            _fail(batch, exc if isinstance(exc, EmbedgateError) else _inference_failed(exc))
            return
        finally:
            self._wakeup.set()  # the loop may be waiting for a batch to end
        ended = time.perf_counter()
        if lane == 0:  # a queued batch started when the one before it ended
            started, self._bulk_ended = max(started, self._bulk_ended), ended
        self._metrics.inference.labels(self._name).observe(ended - started)
        self._metrics.batch_size.labels(self._name).observe(len(batch))
        for item, row in zip(batch, result.vectors, strict=True):
            if not item.future.done():
                item.future.set_result(row)


def _fail(items: Iterable[_Item], error: EmbedgateError) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(error)


def _shutting_down() -> EmbedgateError:
    return EmbedgateError(503, "The server is shutting down.", code="shutting_down")


def _inference_failed(exc: Exception) -> EmbedgateError:
    log.error("inference failed: %s", type(exc).__name__, exc_info=exc)
    return EmbedgateError(500, "The model failed to embed this batch.", code="inference_error")
