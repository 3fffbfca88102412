"""Every state store test runs on SQLite and on the PostgreSQL server of the machine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from embedgate.storage.sql import SqlStateStore


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None  # the embedded default: <data_dir>/embedgate.db
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def store(database_url: str | None, tmp_path: Path) -> AsyncIterator[SqlStateStore]:
    opened = await SqlStateStore.open(database_url, tmp_path)
    yield opened
    await opened.aclose()
