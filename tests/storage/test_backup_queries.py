"""The state store's backup reads and writes, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from embedgate.storage.records import UsageRecord
from embedgate.storage.sql import SqlStateStore
from tests.storage.test_state_store import NOW, key, tenant

pytestmark = pytest.mark.anyio
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def usage(tenant_id: str, minutes: int, tokens: int = 1) -> UsageRecord:
    return UsageRecord(tenant_id, "key_1", "m", "/v1/embeddings", 1, tokens, 64, 200, 1.5,
                       NOW + timedelta(minutes=minutes))  # fmt: skip


async def test_export_keys_gives_every_key_with_its_digest(store: SqlStateStore) -> None:
    for tenant_id in ("a", "b"):
        await store.tenants.create(tenant(tenant_id))
    revoked = key("key_2", "a", revoked_at=NOW, last_used_at=NOW, expires_at=NOW)
    await store.keys.add(key("key_1", "a"), "d1" * 32)
    await store.keys.add(revoked, "d2" * 32)
    await store.keys.add(key("key_3", "b"), "d3" * 32)
    exported = await store.keys.export("a")
    assert exported == [(key("key_1", "a"), "d1" * 32), (revoked, "d2" * 32)]
    assert await store.keys.export("nobody") == []
    # what add_key needs to restore them, on another tenant's deletion and re-creation
    await store.tenants.delete("a")
    await store.tenants.create(tenant("a"))
    for record, digest in exported:
        await store.keys.add(record, digest)
    assert await store.keys.by_digest("d2" * 32) == revoked


async def test_usage_is_exported_in_pages_and_replaced_by_window(store: SqlStateStore) -> None:
    await store.usage.add([usage("a", m, tokens=m + 1) for m in range(5)] + [usage("b", 1)])
    end = NOW + timedelta(minutes=4)
    pages, after = [], 0
    while page := await store.usage.export("a", EPOCH, end, after_id=after, limit=2):
        pages.append([record for _, record in page])
        after = page[-1][0]
    assert [[r.tokens for r in p] for p in pages] == [[1, 2], [3, 4]]  # [start, end)
    assert pages[0][0] == usage("a", 0, tokens=1)
    assert await store.usage.delete("a", NOW + timedelta(minutes=1), end) == 3
    left = await store.usage.export("a", EPOCH, end + timedelta(hours=1), after_id=0, limit=9)
    assert [r.tokens for _, r in left] == [1, 5]
    assert len(await store.usage.export("b", EPOCH, end, after_id=0, limit=9)) == 1
