"""The scheduler of an upstream model: embedgate's fair queue in front of GPU engines.

Requests wait in the same weighted fair queue as the in-process model's (``PendingPool``:
cost = tokens, weight = the tenant's ``priority``; ``QueueShares``: a share of the queue per
tenant), and leave it for the engines only as far as each base URL's window allows
(``AimdWindow``: inputs in flight, adapted to the engine's latency and refusals). So the
engine's own FIFO queue stays short, and the order in which tenants are served is decided
here. When a URL has room, the next inputs in line go at once, up to ``max_batch_size`` and
the room: small requests of several tenants that queued meanwhile travel as one upstream
request, a large one is split over several. A cancelled request's inputs leave the queue.

Routing picks the healthy URL with the least outstanding work (``EndpointPool``). A refused
(429, 503) or failed attempt is retried on the next URL, ``max_retries`` times
(``endpoints.send``). An engine
that rejects a coalesced request (HTTP 400) gets each of its requests alone, so one
tenant's bad input fails only that tenant's request. See docs/scheduling.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from embedgate.engine.backends.base import Embedded, ModelInput, Vectors
from embedgate.engine.endpoints import COOLDOWN_S, Endpoint, EndpointPool, send
from embedgate.engine.queue_shares import QueueShares, Reservation
from embedgate.engine.scheduler import PendingPool, _fail, _Item, _shutting_down
from embedgate.errors import EmbedgateError
from embedgate.observability.metrics import Metrics


class UpstreamEngine(Protocol):
    """What the scheduler needs of an upstream backend: its URLs with their windows and
    health, how often to retry, and one request to one URL."""

    @property
    def pool(self) -> EndpointPool: ...

    @property
    def max_retries(self) -> int: ...

    async def embed_at(self, url: str, inputs: Sequence[ModelInput]) -> Embedded:
        """Raises ``UpstreamRefused`` or ``UpstreamFailed`` where another attempt may
        succeed, ``EmbedgateError`` where it would not."""
        ...


class UpstreamScheduler:
    def __init__(
        self,
        name: str,
        engine: UpstreamEngine,
        metrics: Metrics,
        *,
        max_batch_size: int,
        max_queue: int,
        fair: bool = True,
        burst_tokens: int = 0,
    ) -> None:
        self._name = name
        self._engine = engine
        self._metrics = metrics
        self._max_size = max_batch_size
        self._shares = QueueShares(max_queue)
        self._pending = PendingPool(fair, burst=burst_tokens)
        self.pool = engine.pool
        self._wakeup = asyncio.Event()  # new inputs, or room at a URL
        self._requests = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def queue_depth(self) -> int:
        return self._shares.total

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"dispatch-{self._name}")

    async def aclose(self) -> None:
        for task in (self._task, *self._sending):
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
        self._shares.enqueue(tenant, weight, len(inputs), reservation)  # checks the weight
        loop = asyncio.get_running_loop()
        request = next(self._requests)
        items = [_Item(inp, loop.create_future(), request=request) for inp in inputs]
        self._pending.add(items, tenant, weight)
        self._wakeup.set()
        for item in items:
            item.future.add_done_callback(functools.partial(self._on_done, tenant))
        try:
            rows = await asyncio.gather(*(item.future for item in items))
        except BaseException:
            for item in items:
                item.future.cancel()  # queued ones leave the line at the next take()
            raise
        return Embedded(np.stack(rows), sum(item.tokens for item in items))

    def _on_done(self, tenant: str, _: asyncio.Future[Vectors]) -> None:
        self._shares.release(tenant)

    async def _run(self) -> None:
        while True:
            endpoint = self.pool.pick() if self._pending else None
            batch = self._take(endpoint) if endpoint is not None else []
            if endpoint is None or not batch:
                await self._wait_for_change(COOLDOWN_S if self._pending else None)
                continue
            full = self._count(endpoint, batch)  # now, so the next pick() sees it
            task = asyncio.create_task(self._send(batch, endpoint, full), name="upstream-batch")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _wait_for_change(self, at_most: float | None) -> None:
        """Until inputs arrive or a URL has room; ``at_most`` seconds so that an ejected
        URL's cooldown ending is noticed with nothing else happening."""
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._wakeup.wait()

    def _take(self, endpoint: Endpoint) -> list[_Item]:
        """The next inputs in line that fit ``endpoint``'s room, in inputs and, where they
        are bounded, in tokens (a long input goes alone, once nothing else is in flight)."""
        batch = self._pending.take(min(self._max_size, endpoint.room))
        budget, rest = endpoint.token_room, []
        if budget is not None:
            tokens = itertools.accumulate(item.input.n_tokens for item in batch)
            fits = sum(1 for total in tokens if total <= budget)
            fits = max(fits, 1) if endpoint.tokens == 0 else fits
            batch, rest = batch[:fits], batch[fits:]
            self._pending.put_back(rest)
        self._pending.dispatched(batch, rest)
        return batch

    def _count(self, endpoint: Endpoint, items: Sequence[_Item] | Sequence[ModelInput]) -> bool:
        inputs = [i.input if isinstance(i, _Item) else i for i in items]
        return self.pool.sent(endpoint, len(inputs), sum(i.n_tokens for i in inputs))

    async def _send(self, batch: list[_Item], endpoint: Endpoint, full: bool) -> None:
        """``batch`` to ``endpoint``, where it is counted already (``full``: the window
        had no room left then)."""
        inputs = [item.input for item in batch]
        try:
            result = await self._deliver(inputs, endpoint, full)
        except EmbedgateError as exc:
            if exc.code == "upstream_rejected" and len({item.request for item in batch}) > 1:
                await self._send_alone(batch, endpoint)
            else:
                _fail(batch, exc)
            return
        for item, row, tokens in zip(batch, result.vectors, shares(result.prompt_tokens, inputs),
                                     strict=True):  # fmt: skip
            item.tokens = tokens
            if not item.future.done():
                item.future.set_result(row)

    async def _send_alone(self, batch: list[_Item], endpoint: Endpoint) -> None:
        """Each request of a rejected coalesced batch on its own: only the bad one fails."""
        groups: dict[int, list[_Item]] = {}
        for item in batch:
            groups.setdefault(item.request, []).append(item)
        sends = [self._send(g, endpoint, self._count(endpoint, g)) for g in groups.values()]
        await asyncio.gather(*sends)

    async def _deliver(self, inputs: list[ModelInput], endpoint: Endpoint, full: bool) -> Embedded:
        started = time.perf_counter()
        try:
            result = await send(self.pool, self._engine.embed_at, endpoint, inputs, full=full,
                                retries=self._engine.max_retries)  # fmt: skip
        finally:
            self._wakeup.set()  # room at a URL
        self._metrics.inference.labels(self._name).observe(time.perf_counter() - started)
        self._metrics.batch_size.labels(self._name).observe(len(inputs))
        return result

    def status(self) -> dict[str, Any]:
        return self.pool.status()


def shares(total: int, inputs: Sequence[ModelInput]) -> list[int]:
    """``total`` tokens (the engine's count for a batch) split over its inputs in proportion
    to their own counts, summing to ``total``: a request that travelled alone is billed
    exactly what the engine counted, one that shared a batch its part of it."""
    weights = [max(item.n_tokens, 1) for item in inputs]
    exact = [total * w / sum(weights) for w in weights]
    parts = [int(x) for x in exact]
    by_remainder = sorted(range(len(parts)), key=lambda i: parts[i] - exact[i])
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts
