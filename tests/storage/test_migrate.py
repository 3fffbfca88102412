"""Migrations at start-up: replicas that start together on a fresh database all come up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest

from embedgate.storage.sql import SqlStateStore

pytestmark = pytest.mark.anyio


async def test_replicas_migrating_one_fresh_database_at_once_all_start(
    postgres_url: str, tmp_path: Path
) -> None:
    opening = (SqlStateStore.open(postgres_url, tmp_path) for _ in range(4))
    with anyio.fail_after(60):  # without the migration lock they collide or deadlock
        stores = await asyncio.gather(*opening)
    try:
        for store in stores:
            await store.ping()
            assert await store.list_tenants() == []
    finally:
        for store in stores:
            await store.aclose()
