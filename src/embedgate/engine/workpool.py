"""A few threads for CPU work (parsing, tokenizing), shared fairly between tenants.

Each tenant has its own FIFO queue; the threads serve the queues round-robin, one job at
a time. A tenant that queues 100 chunks of work delays another tenant's single job by at
most one chunk per thread, instead of all 100 (a plain executor is one FIFO for everyone).
Callers cut big work into chunks so that a chunk stays short.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Job:
    run: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class WorkPool:
    def __init__(self, threads: int, name: str) -> None:
        self._queues: OrderedDict[str, deque[_Job]] = OrderedDict()
        self._ready = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"embedgate-{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    async def run(self, tenant: str, work: Callable[[], T]) -> T:
        """``work()`` on a pool thread, in ``tenant``'s turn; its result or its exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the work pool is closed")
            self._queues.setdefault(tenant, deque()).append(_Job(work, loop, future))
            self._ready.notify()
        return await future

    def queued(self) -> dict[str, int]:
        """Jobs waiting per tenant (for tests and health)."""
        with self._ready:
            return {tenant: len(jobs) for tenant, jobs in self._queues.items()}

    def close(self) -> None:
        with self._ready:
            self._closed = True
            waiting = [job for jobs in self._queues.values() for job in jobs]
            self._queues.clear()
            self._ready.notify_all()
        for job in waiting:
            _hand(job, _cancel, None)

    def _next(self) -> _Job | None:
        """The first job of the tenant whose turn it is; that tenant goes to the back."""
        with self._ready:
            while not self._queues and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            tenant, jobs = next(iter(self._queues.items()))
            job = jobs.popleft()
            if jobs:
                self._queues.move_to_end(tenant)
            else:
                del self._queues[tenant]
            return job

    def _serve(self) -> None:
        while (job := self._next()) is not None:
            if job.future.cancelled():  # the request went away while it waited
                continue
            try:
                result = job.run()
            except BaseException as exc:  # handed to the awaiting request, which decides
                _hand(job, _fail, exc)
            else:
                _hand(job, _resolve, result)


def _hand(job: _Job, settle: Callable[[asyncio.Future[Any], Any], None], value: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        job.loop.call_soon_threadsafe(settle, job.future, value)


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _cancel(future: asyncio.Future[Any], _: Any) -> None:
    if not future.done():
        future.cancel()
