"""Limits shared by every replica: the ``MemoryLimiter`` algorithm as one Lua script.

Redis runs a script atomically, so N replicas checking at once see one bucket, one lease
set and one quota counter: together they admit what one process would. The script reads
Redis's own clock, so replicas' clocks need not agree. Keys carry the tenant as a hash tag,
``{tenant}``, so that one tenant's keys share a slot on Redis Cluster.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from embedgate.limits.memory import Ask, Decision, Lease, QuotaAsk

# KEYS: n buckets, then the lease set, then the quota counter.
# ARGV: n, then capacity and cost per bucket, then lease limit (-1: none), lease id, lease
# ttl ms, then quota limit (-1: none), quota cost, quota seed (-1: none), quota ttl s,
# quota need (refused unless max(cost, need) tokens are left).
# Returns: ok (1/0), refused_by (0: none, i: bucket i, -1 concurrency, -2 quota, -3 seed
# needed), wait ms, quota used, then each bucket's level; numbers as strings (Lua numbers
# would reach Python truncated to integers).
CHECK = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + tonumber(now_t[2]) / 1000
local n = tonumber(ARGV[1])
local levels = {}
for i = 1, n do
  local cap = tonumber(ARGV[2 * i])
  local cost = tonumber(ARGV[2 * i + 1])
  local state = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = tonumber(state[1])
  local stamp = tonumber(state[2])
  if cap <= 0 then
    level = 0
  elseif level == nil or stamp == nil then
    level = cap
  else
    level = math.min(cap, level + (now - stamp) * cap / 60000)
  end
  levels[i] = level
  if level < cost then
    local wait = -1
    if cap > 0 and cost <= cap then wait = (cost - level) * 60000 / cap end
    local out = {0, i, tostring(wait), '0'}
    for j = 1, i do out[4 + j] = tostring(levels[j]) end
    return out
  end
end
local base = 2 * n + 1
local lease_limit = tonumber(ARGV[base + 1])
local lease_key = KEYS[n + 1]
if lease_limit >= 0 then
  redis.call('ZREMRANGEBYSCORE', lease_key, '-inf', now)
  if redis.call('ZCARD', lease_key) >= lease_limit then
    return {0, -1, '0', '0'}
  end
end
local quota_limit = tonumber(ARGV[base + 4])
local quota_key = KEYS[n + 2]
local used = 0
if quota_limit >= 0 then
  local known = redis.call('GET', quota_key)
  if known then
    used = tonumber(known)
  elseif tonumber(ARGV[base + 6]) < 0 then
    return {0, -3, '0', '0'}
  else
    used = tonumber(ARGV[base + 6])
  end
  if used + math.max(tonumber(ARGV[base + 5]), tonumber(ARGV[base + 8])) > quota_limit then
    return {0, -2, '0', tostring(used)}
  end
end
local out = {1, 0, '0', '0'}
for i = 1, n do
  local after = levels[i] - tonumber(ARGV[2 * i + 1])
  redis.call('HSET', KEYS[i], 'l', tostring(after), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[i], 120000)
  out[4 + i] = tostring(after)
end
if lease_limit >= 0 then
  local ttl = tonumber(ARGV[base + 3])
  redis.call('ZADD', lease_key, now + ttl, ARGV[base + 2])
  redis.call('PEXPIRE', lease_key, ttl)
end
if quota_limit >= 0 then
  used = used + tonumber(ARGV[base + 5])
  redis.call('SET', quota_key, used, 'EX', tonumber(ARGV[base + 7]))
  out[4] = tostring(used)
end
return out
"""

RELEASE = """
if KEYS[1] ~= '' and ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
if KEYS[2] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then
  local left = redis.call('DECRBY', KEYS[2], tonumber(ARGV[2]))
  if left < 0 then redis.call('SET', KEYS[2], 0, 'KEEPTTL') end
end
return 1
"""

TIMEOUT_S = 0.5  # a Redis that does not answer in this is treated as down


class RedisLimiter:
    backend = "redis"

    def __init__(self, url: str, prefix: str) -> None:
        # After a Redis restart every pooled connection is dead: one that fails is resent
        # at once on a fresh connection, instead of counting as "Redis down" (a timeout
        # is not resent: that would double the wait on a Redis that hangs).
        resend = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
            health_check_interval=30, decode_responses=True, retry=resend,
            retry_on_error=[RedisConnectionError],
        )  # fmt: skip
        self._prefix = prefix
        self._check = self._redis.register_script(CHECK)
        self._release = self._redis.register_script(RELEASE)

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def check(self, ask: Ask) -> Decision:
        keys = [self._key(b.key) for b in ask.buckets]
        args: list[str | int] = [len(ask.buckets)]
        for bucket in ask.buckets:
            args += [bucket.capacity, bucket.cost]
        lease, quota = ask.lease, ask.quota
        keys.append(self._key(lease.key) if lease else self._key("unused"))
        args += [lease.limit, lease.id, lease.ttl_ms] if lease else [-1, "", 0]
        keys.append(self._key(quota.key) if quota else self._key("unused"))
        if quota is not None:
            seed = -1 if quota.seed is None else quota.seed
            args += [quota.limit, quota.cost, seed, quota.ttl_s, quota.need]
        else:
            args += [-1, 0, -1, 0, 0]
        reply = await self._check(keys=keys, args=args)
        ok, refused_by, wait, used, *levels = reply
        return Decision(
            ok=bool(int(ok)),
            refused_by=None if int(refused_by) == 0 else _index(int(refused_by)),
            wait_ms=float(wait),
            levels=tuple(float(level) for level in levels),
            quota_used=int(float(used)),
        )

    async def release(self, lease: Lease | None, refund: QuotaAsk | None) -> None:
        if lease is None and refund is None:
            return
        keys = [self._key(lease.key) if lease else "", self._key(refund.key) if refund else ""]
        args: list[str | int] = [lease.id if lease else "", refund.cost if refund else 0]
        await self._release(keys=keys, args=args)

    async def ping(self) -> None:
        await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()


def _index(refused_by: int) -> int:
    """Lua counts buckets from 1; negative kinds pass through."""
    return refused_by - 1 if refused_by > 0 else refused_by
