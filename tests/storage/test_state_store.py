"""The state store contract, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from embedgate.storage.records import (
    ApiKey,
    AuditEvent,
    Conflict,
    Tenant,
    UsageBucket,
    UsageRecord,
    UsageTotals,
)
from embedgate.storage.sql import SqlStateStore
from embedgate.tenancy.usage import add

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC)


def tenant(tenant_id: str, **overrides: object) -> Tenant:
    values: dict[str, object] = {
        "id": tenant_id, "name": f"Tenant {tenant_id}", "plan": "free", "status": "active",
        "policy": {}, "created_at": NOW, "updated_at": NOW, "uid": f"tn_{tenant_id}",
        **overrides,
    }  # fmt: skip
    return Tenant(**values)  # type: ignore[arg-type]


def key(key_id: str, tenant_id: str, **overrides: object) -> ApiKey:
    values: dict[str, object] = {
        "id": key_id, "tenant_id": tenant_id, "name": "ci", "prefix": f"tenant_{tenant_id}_ab",
        "scopes": ("embeddings",), "created_at": NOW, "tenant_uid": f"tn_{tenant_id}",
        **overrides,
    }  # fmt: skip
    return ApiKey(**values)  # type: ignore[arg-type]


async def test_migrations_are_idempotent(store: SqlStateStore, database_url: str | None,
                                         tmp_path: Path) -> None:  # fmt: skip
    await store.tenants.create(tenant("1001"))
    again = await SqlStateStore.open(database_url, tmp_path)
    assert (await again.tenants.get("1001")) == tenant("1001")
    await again.aclose()


async def test_tenant_lifecycle(store: SqlStateStore) -> None:
    policy = {"rpm": 600, "allowed_models": ["all-minilm-l6-v2"], "名前": "中文"}
    await store.tenants.create(tenant("acme", policy=policy))
    assert await store.tenants.get("acme") == tenant("acme", policy=policy)
    with pytest.raises(Conflict):
        await store.tenants.create(tenant("acme"))
    later = NOW + timedelta(minutes=5)
    updated = await store.tenants.update("acme", later, plan="premium", status="suspended")
    assert updated == tenant("acme", policy=policy, plan="premium", status="suspended",
                             updated_at=later)  # fmt: skip
    assert await store.tenants.update("missing", later, plan="x") is None
    assert await store.tenants.delete("acme") is True
    assert await store.tenants.get("acme") is None
    assert await store.tenants.delete("acme") is False


async def test_tenants_are_listed_in_pages(store: SqlStateStore) -> None:
    for tenant_id in ["b", "a", "1001", "c"]:
        await store.tenants.create(tenant(tenant_id))
    first = await store.tenants.page(limit=2)
    assert [t.id for t in first] == ["1001", "a"]
    rest = await store.tenants.page(after=first[-1].id, limit=10)
    assert [t.id for t in rest] == ["b", "c"]


async def test_keys_are_found_by_digest_and_scoped_to_their_tenant(store: SqlStateStore) -> None:
    await store.tenants.create(tenant("a"))
    await store.tenants.create(tenant("b"))
    await store.keys.add(key("key_a1", "a", expires_at=NOW + timedelta(days=1)), "d" * 64)
    await store.keys.add(key("key_b1", "b"), "e" * 64)
    found = await store.keys.by_digest("d" * 64)
    assert found == key("key_a1", "a", expires_at=NOW + timedelta(days=1))
    assert await store.keys.by_digest("f" * 64) is None
    assert await store.keys.get("b", "key_a1") is None  # another tenant's key id
    assert [k.id for k in await store.keys.for_tenant("a")] == ["key_a1"]
    with pytest.raises(Conflict):
        await store.keys.add(key("key_a2", "a"), "d" * 64)  # digests are unique
    with pytest.raises(Conflict):
        await store.keys.add(key("key_x", "no-such-tenant"), "0" * 64)  # foreign key holds


async def test_revocation_now_and_after_a_grace_period(store: SqlStateStore) -> None:
    await store.tenants.create(tenant("a"))
    await store.keys.add(key("key_1", "a"), "1" * 64)
    await store.keys.add(key("key_2", "a"), "2" * 64)
    assert await store.keys.revoke("a", "key_1", NOW) is True
    assert await store.keys.revoke("b", "key_2", NOW) is False  # not b's key
    await store.keys.revoke("a", "key_2", NOW + timedelta(seconds=60))
    revoked = await store.keys.by_digest("1" * 64)
    graced = await store.keys.by_digest("2" * 64)
    assert revoked is not None
    assert graced is not None
    assert not revoked.usable(NOW)
    assert graced.usable(NOW + timedelta(seconds=59))
    assert not graced.usable(NOW + timedelta(seconds=60))


async def test_last_used_is_recorded_in_batches(store: SqlStateStore) -> None:
    await store.tenants.create(tenant("a"))
    await store.keys.add(key("key_1", "a"), "1" * 64)
    await store.keys.add(key("key_2", "a"), "2" * 64)
    used = NOW + timedelta(hours=1)
    await store.keys.touch({"key_1": used, "key_2": used})
    assert [k.last_used_at for k in await store.keys.for_tenant("a")] == [used, used]


async def test_deleting_a_tenant_erases_its_keys_but_not_the_audit_trail(
    store: SqlStateStore,
) -> None:
    await store.tenants.create(tenant("a"))
    await store.keys.add(key("key_1", "a"), "1" * 64)
    await store.audit.append(AuditEvent("tenant.deleted", "admin", NOW, tenant_id="a"))
    await store.tenants.delete("a")
    assert await store.keys.by_digest("1" * 64) is None
    assert [e.event for e in await store.audit.page(tenant_id="a")] == ["tenant.deleted"]


async def test_audit_log_filters_and_pages_newest_first(store: SqlStateStore) -> None:
    events = [
        AuditEvent("key.created", "admin", NOW, tenant_id="a", key_prefix="tenant_a_x"),
        AuditEvent("auth.failed", "system", NOW, key_prefix="tenant_9_y", client_ip="10.0.0.7"),
        AuditEvent("key.revoked", "admin", NOW, tenant_id="a", detail={"key_id": "key_1"}),
        AuditEvent("auth.failed", "system", NOW, client_ip="::1"),
    ]
    for audit in events:
        await store.audit.append(audit)
    newest = await store.audit.page(limit=2)
    assert [e.event for e in newest] == ["auth.failed", "key.revoked"]
    assert newest[1].detail == {"key_id": "key_1"}
    older = await store.audit.page(before_id=newest[-1].id, limit=10)
    assert [e.event for e in older] == ["auth.failed", "key.created"]
    assert [e.client_ip for e in await store.audit.page(event="auth.failed")] == ["::1", "10.0.0.7"]
    assert len(await store.audit.page(tenant_id="a")) == 2


def usage(tenant_id: str, at: datetime, **overrides: object) -> UsageRecord:
    values: dict[str, object] = {
        "tenant_id": tenant_id, "key_id": "key_1", "model": "all-minilm-l6-v2",
        "route": "/v1/embeddings", "inputs": 2, "tokens": 10, "dimensions": None,
        "status": 200, "latency_ms": 12.5, "at": at, **overrides,
    }  # fmt: skip
    return UsageRecord(**values)  # type: ignore[arg-type]


HOUR = datetime(2026, 11, 21, 12, tzinfo=UTC)


async def test_usage_is_aggregated_per_tenant_and_hour_or_day(store: SqlStateStore) -> None:
    await store.usage.add([
        usage("a", HOUR + timedelta(minutes=1)),
        usage("a", HOUR + timedelta(minutes=59, seconds=59.9), inputs=3, tokens=7),
        usage("a", HOUR + timedelta(hours=1), status=429, inputs=5, tokens=50),
        usage("a", HOUR + timedelta(hours=13), model=None, key_id=None),  # the next day
        usage("b", HOUR + timedelta(minutes=30), tokens=1, dimensions=64),
        usage("a", HOUR - timedelta(days=2)),  # before the window
    ])  # fmt: skip
    start, end = HOUR - timedelta(hours=12), HOUR + timedelta(days=2)
    hourly = await store.usage.buckets(None, start, end, "hour")
    assert hourly == [
        UsageBucket("a", HOUR, UsageTotals(requests=2, errors=0, inputs=5, tokens=17)),
        UsageBucket("a", HOUR + timedelta(hours=1), UsageTotals(1, 1, 0, 0)),
        UsageBucket("a", HOUR + timedelta(hours=13), UsageTotals(1, 0, 2, 10)),
        UsageBucket("b", HOUR, UsageTotals(1, 0, 2, 1)),
    ]
    day = datetime(2026, 11, 21, tzinfo=UTC)
    assert await store.usage.buckets("a", start, end, "day") == [
        UsageBucket("a", day, UsageTotals(3, 1, 5, 17)),
        UsageBucket("a", day + timedelta(days=1), UsageTotals(1, 0, 2, 10)),
    ]
    assert await store.usage.buckets("a", HOUR, HOUR + timedelta(hours=1), "hour") == hourly[:1]
    assert await store.usage.buckets("nobody", start, end, "day") == []


async def test_usage_totals_count_only_successful_tokens(store: SqlStateStore) -> None:
    await store.usage.add([
        usage("a", HOUR, tokens=10),
        usage("a", HOUR + timedelta(seconds=1), tokens=20, status=400),
        usage("a", HOUR + timedelta(days=40), tokens=30, inputs=1),
        usage("b", HOUR, tokens=1000),
    ])  # fmt: skip
    assert await store.usage.totals("a", HOUR) == UsageTotals(3, 1, 3, 40)
    assert await store.usage.totals("a", HOUR, HOUR + timedelta(days=1)) == UsageTotals(2, 1, 2, 10)
    assert await store.usage.totals("c", HOUR) == UsageTotals()
    await store.usage.add([])


async def test_usage_shows_reranking_apart_and_a_stage_is_no_request_of_its_own(
    store: SqlStateStore,
) -> None:
    search, stage = "/v1/collections/{name}/search", "/v1/collections/{name}/search/rerank"
    records = [
        usage("a", HOUR, tokens=10),
        usage("a", HOUR, route="/v1/rerank", inputs=5, tokens=300),
        usage("a", HOUR, route="/rerank", inputs=2, tokens=90, status=413),  # an error
        usage("a", HOUR, route="/v2/rerank", inputs=1, tokens=40),
        usage("a", HOUR, route=search, inputs=1, tokens=6),  # a two-stage search ...
        usage("a", HOUR, route=stage, inputs=8, tokens=500),  # ... and its stage
        usage("a", HOUR, route="/v1/rerankings", inputs=1, tokens=1),  # no rerank route
    ]
    await store.usage.add(records)
    expected = UsageTotals(requests=6, errors=1, inputs=18, tokens=857,
                           rerank_requests=4, rerank_inputs=14, rerank_tokens=840)  # fmt: skip
    assert await store.usage.totals("a", HOUR) == expected
    assert await store.usage.buckets("a", HOUR, HOUR + timedelta(hours=1), "hour") == [
        UsageBucket("a", HOUR, expected)
    ]
    assert add(UsageTotals(), records) == expected  # the unwritten records count the same


async def test_usage_is_pruned_by_age_and_holds_no_long_names(store: SqlStateStore) -> None:
    await store.usage.add([usage("a", HOUR - timedelta(days=500)), usage("b", HOUR),
                           usage("a", HOUR, model="m" * 500, route="/" + "r" * 500)])  # fmt: skip
    assert await store.usage.delete_before(HOUR - timedelta(days=400)) == 1
    assert await store.usage.delete_before(HOUR - timedelta(days=400)) == 0
    assert await store.usage.totals("a", HOUR - timedelta(days=1000)) == UsageTotals(1, 0, 2, 10)


async def test_the_embedded_database_lives_in_the_data_dir(tmp_path: Path) -> None:
    store = await SqlStateStore.open(None, tmp_path)
    assert store.backend == "sqlite"
    await store.ping()
    await store.aclose()
    assert (tmp_path / "embedgate.db").is_file()


def test_unsupported_database_is_refused(tmp_path: Path) -> None:
    from embedgate.storage.sql import async_url

    with pytest.raises(ValueError, match="unsupported database"):
        async_url("mysql://root@127.0.0.1/test", tmp_path)
    assert async_url("postgresql://u@h/db", tmp_path).drivername == "postgresql+psycopg"


async def test_migrations_create_exactly_the_declared_schema(store: SqlStateStore) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from embedgate.storage.schema import metadata

    def diff(connection: object) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))

    async with store._engine.connect() as connection:
        assert await connection.run_sync(diff) == []


async def test_no_table_holds_a_key_secret(store: SqlStateStore) -> None:
    from sqlalchemy import select

    from embedgate.storage.schema import metadata
    from embedgate.tenancy.keys import KeyService

    await store.tenants.create(tenant("1001"))
    issued = await KeyService(store, b"server-secret").issue("1001")
    secret = issued.key.split("_")[-1]
    async with store._engine.connect() as connection:
        for table in metadata.sorted_tables:
            rows = (await connection.execute(select(table))).all()
            assert secret not in repr(rows), table.name
