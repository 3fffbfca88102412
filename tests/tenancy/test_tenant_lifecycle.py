"""Deleting a tenant and re-creating its id, as the services see it: a fresh uid, caches
invalidated at once on the deleting process, a stale replica admitting the new tenant's key
and never opening it with the old one, and the embedding cache purged by uid."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from embedgate.embeddings.cache import EmbeddingCache
from embedgate.engine.backends.base import ModelInput
from embedgate.errors import EmbedgateError
from embedgate.storage.records import UID_PREFIX
from embedgate.storage.sql import SqlStateStore
from embedgate.tenancy.audit import AuditLog
from embedgate.tenancy.auth import Authenticator
from embedgate.tenancy.keys import KeyService
from embedgate.tenancy.policy import Policy
from embedgate.tenancy.tenants import TenantService

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


class Replica:
    """What one server process holds: its own key and tenant caches."""

    def __init__(self, store: SqlStateStore) -> None:
        audit = AuditLog(store.audit, lambda: NOW)
        self.keys = KeyService(store, b"shared-secret")
        self.auth = Authenticator(self.keys, store.tenants, audit, {})
        self.tenants = TenantService(store.tenants, audit, {}, lambda: NOW)
        self.tenants.on_delete(lambda tenant: self.auth.forget_tenant(tenant.id))


class Documents:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def delete_tenant(self, tenant: str) -> None:
        self.deleted.append(tenant)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStateStore]:
    opened = await SqlStateStore.open(None, tmp_path)
    yield opened
    await opened.aclose()


async def create(replica: Replica, tenant_id: str) -> str:
    await replica.tenants.create(tenant_id, name=None, plan=None, policy=Policy(), actor="t")
    return (await replica.keys.issue(tenant_id)).key


async def test_a_recreated_id_is_a_new_uid_and_the_old_key_never_opens_it(
    store: SqlStateStore,
) -> None:
    a, b = Replica(store), Replica(store)
    old_key = await create(a, "acme")
    old = (await b.auth.authenticate(old_key, None)).tenant  # B caches key and tenant
    assert (await a.auth.authenticate(old_key, None)).tenant.uid == old.uid
    assert old.uid.startswith(UID_PREFIX)
    assert old.uid != old.id
    documents = Documents()
    await a.tenants.delete("acme", actor="t", documents=documents)
    assert documents.deleted == [old.uid]  # the store is told the uid, not the id
    with pytest.raises(EmbedgateError) as refused:  # at once on the deleting process
        await a.auth.authenticate(old_key, None)
    assert refused.value.status == 401
    new_key = await create(a, "acme")
    # B still caches the old tenant: the new key makes it read the tenant again...
    new = (await b.auth.authenticate(new_key, None)).tenant
    assert new.id == "acme"
    assert new.uid != old.uid
    # ...after which the old key, still in B's key cache, does not open the new tenant
    with pytest.raises(EmbedgateError):
        await b.auth.authenticate(old_key, None)


async def test_the_embedding_cache_is_purged_by_uid() -> None:
    cache = EmbeddingCache(1 << 20)
    items = [ModelInput("secret text", None, 3)]
    vectors = np.ones((1, 4), dtype=np.float32)
    for uid in ("tn_old", "tn_other"):
        cache.store(uid, "m", items, vectors)
    assert cache.purge("tn_old") == 1
    assert cache.lookup("tn_old", "m", items) == [None]
    assert cache.lookup("tn_other", "m", items)[0] is not None
    assert cache.bytes > 0
    assert len(cache) == 1
