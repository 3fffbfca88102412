"""The work pool: per-tenant FIFO queues served round-robin, results and errors handed back."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from embedgate.engine.workpool import WorkPool

pytestmark = pytest.mark.anyio


async def test_a_tenant_with_many_jobs_delays_another_by_one_job() -> None:
    pool = WorkPool(1, "test")
    done: list[str] = []
    gate = threading.Event()

    def job(name: str) -> str:
        gate.wait(5)
        done.append(name)
        return name

    try:
        flood = [asyncio.ensure_future(pool.run("heavy", lambda i=i: job(f"heavy{i}")))
                 for i in range(10)]  # fmt: skip
        await asyncio.sleep(0.05)  # heavy0 runs (blocked on the gate), heavy1..9 wait
        light = asyncio.ensure_future(pool.run("light", lambda: job("light")))
        await asyncio.sleep(0.05)
        gate.set()
        assert await light == "light"
        await asyncio.gather(*flood)
    finally:
        pool.close()
    assert done.index("light") <= 2  # after heavy0 (running) and at most heavy1
    assert [d for d in done if d != "light"] == [f"heavy{i}" for i in range(10)]  # FIFO


async def test_tenants_take_turns() -> None:
    pool = WorkPool(1, "test")
    done: list[str] = []
    gate = threading.Event()

    def job(name: str) -> None:
        gate.wait(5)
        done.append(name)

    try:
        jobs = [asyncio.ensure_future(pool.run(t, lambda t=t, i=i: job(f"{t}{i}")))
                for t in "ab" for i in range(3)]  # fmt: skip
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(*jobs)
    finally:
        pool.close()
    assert done == ["a0", "b0", "a1", "b1", "a2", "b2"]


async def test_errors_reach_the_caller_and_threads_run_in_parallel() -> None:
    pool = WorkPool(2, "test")

    def fail() -> None:
        raise ValueError("bad input")

    try:
        with pytest.raises(ValueError, match="bad input"):
            await pool.run("t", fail)
        started = time.perf_counter()
        await asyncio.gather(pool.run("t", lambda: time.sleep(0.3)),
                             pool.run("t", lambda: time.sleep(0.3)))  # fmt: skip
        assert time.perf_counter() - started < 0.55  # both threads, not one after the other
        assert pool.queued() == {}
    finally:
        pool.close()
    with pytest.raises(RuntimeError):
        await pool.run("t", lambda: None)


async def test_a_cancelled_waiting_job_is_skipped() -> None:
    pool = WorkPool(1, "test")
    ran: list[int] = []
    gate = threading.Event()
    try:
        first = asyncio.ensure_future(pool.run("t", lambda: gate.wait(5)))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(pool.run("t", lambda: ran.append(2)))
        await asyncio.sleep(0.01)
        second.cancel()
        gate.set()
        await first
        await pool.run("t", lambda: ran.append(3))
    finally:
        pool.close()
    assert ran == [3]
