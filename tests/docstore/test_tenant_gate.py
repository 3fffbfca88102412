"""The per-tenant share of a store's workers: a bound per tenant, none across tenants,
and an entry only while a tenant has calls waiting or running."""

from __future__ import annotations

import anyio
import pytest

from embedgate.docstore.tenant_gate import TenantGate

pytestmark = pytest.mark.anyio


async def test_a_tenant_holds_at_most_its_limit_and_others_are_not_held_up() -> None:
    gate = TenantGate(3)
    running = {"a": 0, "b": 0}
    most = {"a": 0, "b": 0}
    release = anyio.Event()

    async def call(tenant: str) -> None:
        async with gate.hold(tenant):
            running[tenant] += 1
            most[tenant] = max(most[tenant], running[tenant])
            if tenant == "a":
                await release.wait()
            running[tenant] -= 1

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(call, "a")
        await anyio.sleep(0.05)
        with anyio.fail_after(2):
            await call("b")  # while 17 calls of "a" wait
        assert most == {"a": 3, "b": 1}
        release.set()
    assert gate.tracked() == 0


async def test_cancelled_waiters_leave_no_entry() -> None:
    gate = TenantGate(1)
    hold = anyio.Event()

    async def call() -> None:
        async with gate.hold("a"):
            await hold.wait()

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(call)
        await anyio.sleep(0.05)
        assert gate.tracked() == 1
        group.cancel_scope.cancel()
    assert gate.tracked() == 0
    for n in range(1000):  # many tenants one after another: memory does not grow
        async with gate.hold(f"t{n}"):
            pass
    assert gate.tracked() == 0
