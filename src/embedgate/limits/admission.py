"""A tenant's rate limits, concurrency and monthly quota, checked before any work.

Admission has two phases, each one atomic check on the limiter (this process's memory, or
Redis shared by every replica): ``admit_request`` before a /v1 request's body is read (one
request, a concurrency lease), ``admit_tokens`` once its inputs are tokenized (tpm and the
quota). Each refuses with 429 and Retry-After and returns the ``x-ratelimit-*`` headers of
the tightest bucket. When Redis is unreachable the
configured failure mode decides: ``open`` admits without limits, ``closed`` answers 503;
either way it is logged once per outage and shown in /health.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from embedgate.errors import EmbedgateError
from embedgate.limits.memory import (
    CONCURRENCY,
    NEED_SEED,
    QUOTA,
    Ask,
    Bucket,
    Decision,
    Lease,
    Limiter,
    QuotaAsk,
    reset_ms,
)
from embedgate.tenancy.auth import Caller
from embedgate.tenancy.usage import month_start

log = logging.getLogger("embedgate.limits")

RETRY_DOWN_S = 1.0  # after a failure, Redis is not asked again for this long
Kind = Literal["requests", "tokens"]
Seeder = Callable[[str, datetime], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class _Slot:
    kind: Kind
    whose: str  # "your organization" or "this API key"
    bucket: Bucket


@dataclass(slots=True)
class Admission:
    """What an admitted request holds until it finishes."""

    headers: dict[str, str] = field(default_factory=dict)
    lease: Lease | None = None
    quota: QuotaAsk | None = None


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) of ``now``: its first instant, and the next month's."""
    start = month_start(now)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following


def duration(ms: float) -> str:
    """OpenAI's reset format: 20ms, 1.5s, 6m0s."""
    if ms < 1000:
        return f"{math.ceil(ms)}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


def too_many(message: str, wait_ms: float, headers: dict[str, str], *, code: str) -> EmbedgateError:
    wait_ms = max(wait_ms, 1.0)
    retry = {
        "Retry-After": str(math.ceil(wait_ms / 1000)),
        "retry-after-ms": str(math.ceil(wait_ms)),
    }
    return EmbedgateError(429, message, code=code, headers={**headers, **retry})


class Limits:
    def __init__(
        self,
        limiter: Limiter,
        seeder: Seeder,
        *,
        failure_mode: Literal["open", "closed"],
        lease_ttl_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._limiter = limiter
        self._seeder = seeder
        self._failure_mode = failure_mode
        self._lease_ttl_ms = int(lease_ttl_s * 1000)
        self._clock = clock
        self._down_until = 0.0
        self._down_since: float | None = None
        self._releases: set[asyncio.Task[None]] = set()

    @property
    def backend(self) -> str:
        return self._limiter.backend

    async def admit_request(self, caller: Caller, *, spends_tokens: bool) -> Admission:
        """Phase 1, before the request body is read: take one request (``rpm``, ``key_rpm``)
        and a ``max_concurrency`` lease, or raise 429. A route that ``spends_tokens`` is also
        refused when no token could be admitted: ``tpm`` 0, or the monthly quota used up."""
        if spends_tokens:
            self._refuse_no_tpm(caller)
        quota = self._quota_ask(caller, 0, need=1) if spends_tokens else None
        slots, lease = _slots(caller, 1, 0), self._lease(caller)
        if lease is None and quota is None and all(s.kind == "tokens" for s in slots):
            return Admission()  # nothing to take yet: phase 2 is the one check (and headers)
        return await self._admit(caller, slots, lease, quota, 0)

    async def admit_tokens(self, caller: Caller, tokens: int) -> Admission:
        """Phase 2, once the input is tokenized: take ``tokens`` (``tpm``, ``key_tpm``, the
        monthly quota), or raise 429. The request itself was taken in phase 1."""
        quota = self._quota_ask(caller, tokens, need=tokens)
        return await self._admit(caller, _slots(caller, 0, tokens), None, quota, tokens)

    async def _admit(
        self, caller: Caller, slots: list[_Slot], lease: Lease | None, quota: QuotaAsk | None,
        tokens: int,
    ) -> Admission:  # fmt: skip
        ask = Ask(tuple(s.bucket for s in slots), lease, quota)
        if not ask.buckets and lease is None and quota is None:
            return Admission()
        decision = await self._check(ask)
        if decision is None:  # limiter down, failing open
            return Admission()
        if decision.refused_by == NEED_SEED and quota is not None:
            quota = await self._seeded(caller, quota)
            decision = await self._check(Ask(ask.buckets, lease, quota))
            if decision is None:
                return Admission()
        headers = _headers(slots, decision)
        if not decision.ok:
            raise self._refusal(caller, slots, decision, headers, tokens)
        return Admission(headers, lease, quota)

    def _refuse_no_tpm(self, caller: Caller) -> None:
        """``tpm: 0`` admits no token ever: refused before anything is read or counted."""
        for limit, whose in ((caller.policy.tpm, "your organization"),
                             (caller.policy.key_tpm, "this API key")):  # fmt: skip
            if limit == 0:
                raise too_many(f"No tokens are allowed on {whose} (0 tokens per minute).",
                               60_000, {}, code="rate_limit_exceeded")  # fmt: skip

    async def finish(self, admission: Admission, *, succeeded: bool) -> None:
        """Give back the concurrency lease, and the quota tokens of a failed request.

        In memory at once. On Redis the release is sent now, in the background, and not
        waited for: it reaches Redis well before the client can read this response and send
        its next request, and the response does not pay a second round trip."""
        refund = None if succeeded else admission.quota
        if admission.lease is None and refund is None:
            return
        if self._limiter.backend == "memory":
            await self._release(admission.lease, refund)
            return
        task = asyncio.get_running_loop().create_task(self._release(admission.lease, refund))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, lease: Lease | None, refund: QuotaAsk | None) -> None:
        try:
            await self._limiter.release(lease, refund)
        except Exception:  # a lease expires on its own
            log.warning("could not release a rate-limit lease", exc_info=True)

    async def peek(self, caller: Caller) -> dict[str, str]:
        """The caller's request and token headers, without taking anything. Never raises: a
        limiter that is down (even failing closed) just means no headers."""
        slots = _slots(caller, 0, 0)
        if not slots:
            return {}
        try:
            decision = await self._check(Ask(tuple(s.bucket for s in slots)))
        except EmbedgateError:
            return {}
        return _headers(slots, decision) if decision is not None else {}

    def health(self) -> dict[str, Any]:
        return {
            "backend": self._limiter.backend,
            "ready": self._down_since is None,
            "failure_mode": self._failure_mode,
        }

    async def ping(self) -> bool:
        try:
            await self._limiter.ping()
        except Exception as exc:
            self._went_down(exc)
            return False
        self._came_back()
        return True

    async def aclose(self) -> None:
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
        await self._limiter.aclose()

    async def _check(self, ask: Ask) -> Decision | None:
        if time.monotonic() < self._down_until:
            return self._unavailable()
        try:
            decision = await self._limiter.check(ask)
        except Exception as exc:  # connection refused, timeout, Redis errors
            self._went_down(exc)
            return self._unavailable()
        self._came_back()
        return decision

    def _went_down(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + RETRY_DOWN_S
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error(
                "rate limiter (%s) unreachable: %s; failing %s", self._limiter.backend,
                type(exc).__name__, self._failure_mode,
            )  # fmt: skip

    def _came_back(self) -> None:
        if self._down_since is not None:
            log.warning("rate limiter (%s) reachable again after %.1fs", self._limiter.backend,
                        time.monotonic() - self._down_since)  # fmt: skip
            self._down_since = None
            self._down_until = 0.0  # a /health ping saw it back: ask it again at once

    def _unavailable(self) -> Decision | None:
        """No decision (admit without limits) when failing open; 503 when failing closed."""
        if self._failure_mode == "open":
            return None
        raise EmbedgateError(
            503, "Rate limits cannot be checked right now; retry shortly.",
            code="rate_limiter_unavailable", headers={"Retry-After": "1"},
        )  # fmt: skip

    def _lease(self, caller: Caller) -> Lease | None:
        limit = caller.policy.max_concurrency
        if limit is None:
            return None
        key = f"{{{caller.tenant.uid}}}:inflight"
        return Lease(key, limit, uuid.uuid4().hex, self._lease_ttl_ms)

    def _quota_ask(self, caller: Caller, tokens: int, *, need: int) -> QuotaAsk | None:
        limit = caller.policy.monthly_token_quota
        if limit is None:
            return None
        start, following = month_bounds(self._clock())
        ttl = int((following - self._clock()).total_seconds()) + 7 * 86400
        key = f"{{{caller.tenant.uid}}}:quota:{start:%Y%m}"
        return QuotaAsk(key, limit, tokens, None, ttl, need)

    async def _seeded(self, caller: Caller, quota: QuotaAsk) -> QuotaAsk:
        """The same ask, with this month's tokens from metering for a limiter that lost it."""
        start, _ = month_bounds(self._clock())
        used = await self._seeder(caller.tenant.uid, start)
        return replace(quota, seed=used)

    def _refusal(
        self, caller: Caller, slots: list[_Slot], decision: Decision, headers: dict[str, str],
        tokens: int,
    ) -> EmbedgateError:  # fmt: skip
        if decision.refused_by == CONCURRENCY:
            limit = caller.policy.max_concurrency
            return too_many(f"Too many requests in flight: your organization allows {limit} "
                            "at a time. Retry when one finishes.", 1000, headers,
                            code="rate_limit_exceeded")  # fmt: skip
        if decision.refused_by == QUOTA:
            _, following = month_bounds(self._clock())
            wait = (following - self._clock()).total_seconds() * 1000
            return too_many(
                f"You exceeded your monthly token quota ({caller.policy.monthly_token_quota} "
                f"tokens, {decision.quota_used} used). It resets at "
                f"{following:%Y-%m-%dT%H:%M:%SZ}.", wait, headers, code="insufficient_quota",
            )  # fmt: skip
        slot = slots[decision.refused_by or 0]
        per = "requests per minute" if slot.kind == "requests" else "tokens per minute"
        if decision.wait_ms < 0 and slot.kind == "requests":  # rpm: 0, a tenant switched off
            return too_many(f"No requests are allowed on {slot.whose} (0 requests per minute).",
                            60_000, headers, code="rate_limit_exceeded")  # fmt: skip
        if decision.wait_ms < 0:
            return too_many(
                f"This request has {tokens} tokens, more than the {slot.bucket.capacity} "
                f"{per} {slot.whose} allows; send fewer or shorter inputs per request.",
                60_000, headers, code="rate_limit_exceeded",
            )  # fmt: skip
        return too_many(
            f"Rate limit reached for {per} on {slot.whose}: limit {slot.bucket.capacity}. "
            f"Retry after {duration(decision.wait_ms)}.", decision.wait_ms, headers,
            code="rate_limit_exceeded",
        )  # fmt: skip


def _slots(caller: Caller, request_cost: int, tokens: int) -> list[_Slot]:
    """Every bucket of the caller, each taking its cost (0 for those only read, for the
    headers)."""
    policy, tenant, key = caller.policy, caller.tenant.uid, caller.key.id
    wanted: list[tuple[Kind, str, str, int | None, int]] = [
        ("requests", "your organization", f"{{{tenant}}}:rpm", policy.rpm, request_cost),
        ("requests", "this API key", f"{{{tenant}}}:key:{key}:rpm", policy.key_rpm,
         request_cost),
        ("tokens", "your organization", f"{{{tenant}}}:tpm", policy.tpm, tokens),
        ("tokens", "this API key", f"{{{tenant}}}:key:{key}:tpm", policy.key_tpm, tokens),
    ]  # fmt: skip
    return [
        _Slot(kind, whose, Bucket(name, limit, cost))
        for kind, whose, name, limit, cost in wanted
        if limit is not None
    ]


def _headers(slots: list[_Slot], decision: Decision) -> dict[str, str]:
    """For requests and for tokens: the bucket with the least left, as OpenAI names them."""
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        known = [
            (level, slot.bucket.capacity)
            for slot, level in zip(slots, decision.levels, strict=False)
            if slot.kind == kind
        ]
        if not known:
            continue
        level, capacity = min(known, key=lambda pair: pair[0])
        headers[f"x-ratelimit-limit-{kind}"] = str(capacity)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(level)))
        headers[f"x-ratelimit-reset-{kind}"] = duration(reset_ms(max(level, 0.0), capacity))
    return headers
