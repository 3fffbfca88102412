"""Migrations at start-up: replicas that start together on a fresh database all come up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from embedgate.storage.sql import SqlStateStore

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 12, 1, tzinfo=UTC)
EARLIER = datetime(2026, 1, 1, tzinfo=UTC)


async def test_replicas_migrating_one_fresh_database_at_once_all_start(
    postgres_url: str, tmp_path: Path
) -> None:
    opening = (SqlStateStore.open(postgres_url, tmp_path) for _ in range(4))
    with anyio.fail_after(60):  # without the migration lock they collide or deadlock
        stores = await asyncio.gather(*opening)
    try:
        for store in stores:
            await store.ping()
            assert await store.tenants.page() == []
    finally:
        for store in stores:
            await store.aclose()


async def test_0004_gives_existing_rows_their_id_as_uid(
    database_url: str | None, tmp_path: Path
) -> None:
    """A database from before uids: its tenants, keys and usage keep working unmoved (the
    document store's directories and rows are keyed by what was the id)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from embedgate.storage.migrate import MIGRATIONS

    store = await SqlStateStore.open(database_url, tmp_path)

    def to_0003(connection: Any) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")

    async with store._engine.begin() as connection:
        await connection.run_sync(to_0003)
        await connection.execute(
            text(
                "INSERT INTO tenants (id, name, plan, status, policy, created_at, updated_at) "
                "VALUES ('legacy', 'L', 'default', 'active', '{}', :at, :at)"
            ),
            {"at": NOW},
        )
        await connection.execute(text(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, digest, scopes, created_at) "
            "VALUES ('key_1', 'legacy', '', 'p', :digest, '[]', :at)"),
            {"digest": "d" * 64, "at": NOW})  # fmt: skip
        await connection.execute(text(
            "INSERT INTO usage_records (tenant_id, route, inputs, tokens, status, latency_ms, "
            "at, epoch_hour) VALUES ('legacy', '/v1/embeddings', 1, 7, 200, 1.0, :at, 0)"),
            {"at": NOW})  # fmt: skip
    await store.aclose()
    store = await SqlStateStore.open(database_url, tmp_path)
    try:
        tenant = await store.tenants.get("legacy")
        assert tenant is not None
        assert tenant.uid == "legacy"
        key = await store.keys.by_digest("d" * 64)
        assert key is not None
        assert key.tenant_uid == "legacy"
        assert (await store.usage.totals("legacy", EARLIER)).tokens == 7
        assert await store.tenants.uids() == {"legacy"}
    finally:
        await store.aclose()
