"""Every state store test runs on SQLite and on the PostgreSQL server of the machine."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from embedgate.storage.sql import SqlStateStore

ADMIN_URL = os.environ.get(
    "EMBEDGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of its own for one test, dropped afterwards."""
    name = f"embedgate_test_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
