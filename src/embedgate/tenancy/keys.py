"""API keys: issued once, stored as HMAC digests, verified by digest alone.

A key reads ``tenant_<tenant_id>_<secret>``, but the tenant id in it is never trusted:
only the digest lookup decides whose key it is. Verified keys are cached for
``CACHE_SECONDS`` so that a revocation bites on every replica within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from embedgate.keyfiles import random_base62
from embedgate.storage.base import StateStore
from embedgate.storage.records import ApiKey
from embedgate.tenancy.single_flight import SingleFlight

Scope = Literal["embeddings", "search:read", "search:write"]
SCOPES: tuple[Scope, ...] = ("embeddings", "search:read", "search:write")
SECRET_LENGTH = 43  # base62: about 256 bits
KEY_PATTERN = re.compile(r"tenant_([a-z0-9][a-z0-9-]{0,62})_([A-Za-z0-9]{32,128})")
CACHE_SECONDS = 2.0
CACHE_ENTRIES = 10_000


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    record: ApiKey
    key: str  # the secret: returned once, never stored


class KeyService:
    def __init__(
        self, store: StateStore, server_secret: bytes, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._store = store
        self._secret = server_secret
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()
        self._used: dict[str, datetime] = {}  # key id -> last use, written in batches
        self._loading: SingleFlight[str, ApiKey | None] = SingleFlight()

    def digest(self, key: str) -> str:
        return hmac.new(self._secret, key.encode("utf-8"), hashlib.sha256).hexdigest()

    async def issue(
        self,
        tenant_id: str,
        *,
        name: str = "",
        scopes: Sequence[str] = SCOPES,
        expires_in: int | None = None,
    ) -> IssuedKey:
        now = self._clock()
        tenant = await self._store.tenants.get(tenant_id)  # None: keys.add refuses it
        secret = random_base62(SECRET_LENGTH)
        key = f"tenant_{tenant_id}_{secret}"
        record = ApiKey(
            id=f"key_{secrets.token_hex(12)}",
            tenant_id=tenant_id,
            name=name,
            prefix=f"tenant_{tenant_id}_{secret[:4]}",
            scopes=tuple(scopes),
            created_at=now,
            expires_at=now + timedelta(seconds=expires_in) if expires_in else None,
            tenant_uid=tenant.uid if tenant is not None else None,
        )
        await self._store.keys.add(record, self.digest(key))
        return IssuedKey(record, key)

    async def rotate(self, tenant_id: str, key_id: str, grace_period: int = 0) -> IssuedKey | None:
        """A new key with the same name, scopes and lifetime; the old one stops working after
        ``grace_period`` seconds, so clients can switch without downtime."""
        old = await self._store.keys.get(tenant_id, key_id)
        if old is None or not old.usable(self._clock()):
            return None
        lifetime = old.expires_at - old.created_at if old.expires_at else None
        issued = await self.issue(
            tenant_id, name=old.name, scopes=old.scopes,
            expires_in=int(lifetime.total_seconds()) if lifetime else None,
        )  # fmt: skip
        cutoff = self._clock() + timedelta(seconds=grace_period)
        await self._store.keys.revoke(tenant_id, key_id, cutoff)
        return issued

    async def revoke(self, tenant_id: str, key_id: str) -> ApiKey | None:
        """The key as it was, if it was live and is now revoked; else None."""
        key = await self._store.keys.get(tenant_id, key_id)
        if key is None or not key.usable(self._clock()):
            return None
        await self._store.keys.revoke(tenant_id, key_id, self._clock())
        return key

    async def listed(self, tenant_id: str) -> list[ApiKey]:
        """Keys that still work (including rotated ones in their grace period)."""
        now = self._clock()
        return [key for key in await self._store.keys.for_tenant(tenant_id) if key.usable(now)]

    async def live(self, tenant_id: str, key_id: str) -> ApiKey | None:
        """The key if it still works, read from the store (uncached: a console session
        re-checks its key on every request, so revocation and expiry end it at once)."""
        key = await self._store.keys.get(tenant_id, key_id)
        return key if key is not None and key.usable(self._clock()) else None

    async def verify(self, presented: str) -> ApiKey | None:
        """The key record if ``presented`` is a live key, else None. Never raises on junk."""
        if not KEY_PATTERN.fullmatch(presented):
            return None
        digest = self.digest(presented)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            record = cached[1]
        else:
            record = await self._loading.run(digest, lambda: self._load(digest))
        now = self._clock()
        if record is None or not record.usable(now):
            return None
        self._used[record.id] = now
        return record

    async def flush_usage(self) -> None:
        """Write the last-use times gathered since the previous flush, in one statement."""
        used, self._used = self._used, {}
        try:
            await self._store.keys.touch(used)
        except BaseException:  # the database is away: the next flush writes them
            self._used = used | self._used  # uses since then are later: they win
            raise

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop the cached keys of a deleted tenant: they stop working here at once."""
        for digest in [d for d, (_, r) in self._cache.items() if r and r.tenant_id == tenant_id]:
            del self._cache[digest]

    async def _load(self, digest: str) -> ApiKey | None:
        record = await self._store.keys.by_digest(digest)
        self._remember(digest, record)
        return record

    def _remember(self, digest: str, record: ApiKey | None) -> None:
        self._cache[digest] = (time.monotonic() + CACHE_SECONDS, record)
        self._cache.move_to_end(digest)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
