"""The state store contract for web console sessions, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from embedgate.storage.records import Conflict, ConsoleSession, Tenant
from embedgate.storage.sql import SqlStateStore

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 28, 9, 30, 0, 250000, tzinfo=UTC)
LATER = NOW + timedelta(hours=8)


def tenant(tenant_id: str) -> Tenant:
    return Tenant(id=tenant_id, name=tenant_id, plan="free", status="active", policy={},
                  created_at=NOW, updated_at=NOW)  # fmt: skip


def tenant_session(tenant_id: str, **overrides: object) -> ConsoleSession:
    values: dict[str, object] = {
        "kind": "tenant", "created_at": NOW, "expires_at": LATER, "tenant_id": tenant_id,
        "key_id": "key_1", "key_prefix": f"tenant_{tenant_id}_abcd", **overrides,
    }  # fmt: skip
    return ConsoleSession(**values)  # type: ignore[arg-type]


ADMIN = ConsoleSession(kind="admin", created_at=NOW, expires_at=LATER, admin_digest="a" * 64)


async def test_sessions_are_found_by_digest_and_deleted(store: SqlStateStore) -> None:
    await store.tenants.create(tenant("acme"))
    await store.sessions.add(tenant_session("acme"), "1" * 64)
    await store.sessions.add(ADMIN, "2" * 64)
    assert await store.sessions.by_digest("1" * 64) == tenant_session("acme")
    assert await store.sessions.by_digest("2" * 64) == ADMIN
    assert await store.sessions.by_digest("3" * 64) is None
    assert await store.sessions.delete("1" * 64) is True
    assert await store.sessions.delete("1" * 64) is False
    assert await store.sessions.by_digest("1" * 64) is None
    assert await store.sessions.by_digest("2" * 64) == ADMIN


async def test_a_duplicate_digest_or_an_unknown_tenant_conflicts(store: SqlStateStore) -> None:
    await store.tenants.create(tenant("acme"))
    await store.sessions.add(tenant_session("acme"), "1" * 64)
    with pytest.raises(Conflict):
        await store.sessions.add(tenant_session("acme"), "1" * 64)
    with pytest.raises(Conflict):
        await store.sessions.add(tenant_session("nobody"), "4" * 64)


async def test_expired_sessions_are_pruned(store: SqlStateStore) -> None:
    await store.tenants.create(tenant("acme"))
    await store.sessions.add(tenant_session("acme", expires_at=NOW), "1" * 64)
    await store.sessions.add(tenant_session("acme"), "2" * 64)
    await store.sessions.add(ADMIN, "3" * 64)
    assert await store.sessions.delete_expired(NOW + timedelta(seconds=1)) == 1
    assert await store.sessions.delete_expired(NOW + timedelta(seconds=1)) == 0
    assert await store.sessions.by_digest("1" * 64) is None
    assert await store.sessions.delete_expired(LATER + timedelta(seconds=1)) == 2


async def test_deleting_a_tenant_ends_its_sessions(store: SqlStateStore) -> None:
    await store.tenants.create(tenant("acme"))
    await store.tenants.create(tenant("other"))
    await store.sessions.add(tenant_session("acme"), "1" * 64)
    await store.sessions.add(tenant_session("other"), "2" * 64)
    assert await store.tenants.delete("acme") is True
    assert await store.sessions.by_digest("1" * 64) is None
    assert await store.sessions.by_digest("2" * 64) == tenant_session("other")


async def test_tenants_are_counted(store: SqlStateStore) -> None:
    assert await store.tenants.count() == 0
    for tenant_id in ("a", "b", "c"):
        await store.tenants.create(tenant(tenant_id))
    assert await store.tenants.count() == 3
