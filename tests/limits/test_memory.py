"""The limiter contract, on one process's memory and on the machine's real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from embedgate.limits.memory import (
    CONCURRENCY,
    NEED_SEED,
    QUOTA,
    Ask,
    Bucket,
    Lease,
    Limiter,
    MemoryLimiter,
    QuotaAsk,
)
from embedgate.limits.redis import RedisLimiter
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Limiter]:
    made: Limiter = (
        MemoryLimiter() if request.param == "memory" else RedisLimiter(REDIS_URL, redis_prefix)
    )
    yield made
    await made.aclose()


def rpm(capacity: int, cost: int = 1, key: str = "{t}:rpm") -> Bucket:
    return Bucket(key, capacity, cost)


async def test_a_bucket_admits_its_capacity_then_says_how_long_to_wait(limiter: Limiter) -> None:
    ask = Ask((rpm(3),))
    decisions = [await limiter.check(ask) for _ in range(4)]
    assert [d.ok for d in decisions] == [True, True, True, False]
    assert decisions[2].levels[0] == pytest.approx(0.0, abs=0.01)
    assert decisions[3].refused_by == 0
    # 3 per minute: one more request in ~20 s
    assert 19_000 < decisions[3].wait_ms <= 20_000


async def test_a_request_larger_than_the_bucket_can_never_pass(limiter: Limiter) -> None:
    decision = await limiter.check(Ask((Bucket("{t}:tpm", 100, 101),)))
    assert not decision.ok
    assert decision.wait_ms == -1
    assert (await limiter.check(Ask((Bucket("{t}:tpm", 100, 100),)))).ok


async def test_a_refused_request_takes_nothing_from_any_bucket(limiter: Limiter) -> None:
    requests, tokens = rpm(10), Bucket("{t}:tpm", 50, 40)
    assert (await limiter.check(Ask((requests, tokens)))).ok
    refused = await limiter.check(Ask((requests, tokens)))
    assert not refused.ok
    assert refused.refused_by == 1
    after = await limiter.check(Ask((rpm(10, cost=0),)))
    assert after.levels[0] == pytest.approx(9.0, abs=0.01)  # only the admitted request counted


async def test_concurrency_leases_are_released_and_expire(limiter: Limiter) -> None:
    first, second = (Lease("{t}:inflight", 1, lease_id, 60_000) for lease_id in ("a", "b"))
    assert (await limiter.check(Ask(lease=first))).ok
    refused = await limiter.check(Ask(lease=second))
    assert refused.refused_by == CONCURRENCY
    await limiter.release(first, None)
    assert (await limiter.check(Ask(lease=second))).ok
    short = Lease("{u}:inflight", 1, "c", 50)
    assert (await limiter.check(Ask(lease=short))).ok
    await asyncio.sleep(0.1)  # a crashed replica's lease does not hold the slot forever
    assert (await limiter.check(Ask(lease=Lease("{u}:inflight", 1, "d", 50)))).ok


async def test_quota_is_seeded_counted_refused_and_refunded(limiter: Limiter) -> None:
    def quota(cost: int, seed: int | None = None) -> QuotaAsk:
        return QuotaAsk("{t}:quota:202611", 100, cost, seed, 3600)

    assert (await limiter.check(Ask(quota=quota(5)))).refused_by == NEED_SEED
    admitted = await limiter.check(Ask(quota=quota(5, seed=90)))
    assert admitted.ok
    assert admitted.quota_used == 95
    refused = await limiter.check(Ask(quota=quota(10)))
    assert refused.refused_by == QUOTA
    assert refused.quota_used == 95
    await limiter.release(None, quota(5))  # the admitted request failed: its tokens come back
    assert (await limiter.check(Ask(quota=quota(10)))).quota_used == 100


async def test_two_replicas_on_one_redis_share_one_limit(redis_prefix: str) -> None:
    replicas = [RedisLimiter(REDIS_URL, redis_prefix) for _ in range(2)]
    ask = Ask((rpm(20),), None)
    decisions = await asyncio.gather(*(replicas[i % 2].check(ask) for i in range(40)))
    admitted = sum(d.ok for d in decisions)
    assert 20 <= admitted <= 21  # one may refill while 40 checks run
    for replica in replicas:
        await replica.aclose()


async def test_an_unreachable_redis_raises() -> None:
    down = RedisLimiter("redis://127.0.0.1:1/0", "x:")
    with pytest.raises(Exception):  # noqa: B017, PT011 - any connection error
        await down.check(Ask((rpm(1),)))
    await down.aclose()


async def test_a_quota_need_refuses_a_spent_quota_without_taking(limiter: Limiter) -> None:
    """Phase 1 of admission asks for 0 tokens but needs 1: a quota with nothing left
    refuses it, one with something left admits it and takes nothing."""

    def ask(cost: int, need: int, seed: int | None = None) -> Ask:
        return Ask(quota=QuotaAsk("{t}:quota:202612", 10, cost, seed, 3600, need))

    assert (await limiter.check(ask(0, 1, seed=9))).ok
    assert (await limiter.check(ask(0, 1))).quota_used == 9  # took nothing
    assert (await limiter.check(ask(1, 1))).quota_used == 10
    refused = await limiter.check(ask(0, 1))
    assert refused.refused_by == QUOTA
    assert refused.quota_used == 10
    empty = await limiter.check(Ask(quota=QuotaAsk("{u}:quota:202612", 0, 0, 0, 3600, 1)))
    assert empty.refused_by == QUOTA  # monthly_token_quota: 0


async def test_a_zero_cost_bucket_reports_without_taking(limiter: Limiter) -> None:
    """Phase 1 reads the token buckets (for the headers) at cost 0; phase 2 reads the
    request buckets at cost 0: neither takes from the other's."""
    assert (await limiter.check(Ask((rpm(5), rpm(100, 0, "{t}:tpm"))))).levels == (4.0, 100.0)
    second = await limiter.check(Ask((rpm(5, 0), rpm(100, 30, "{t}:tpm"))))
    assert second.ok
    assert second.levels[0] == pytest.approx(4.0, abs=0.01)
    assert second.levels[1] == pytest.approx(70.0, abs=0.01)
