"""The document store on PostgreSQL + pgvector, for replicas that share one database.

Isolation is the database's job: every data transaction is confined to its tenant by
row-level security (``transactions``). A collection's calls are its handle's
(``collection``): vectors are searched exactly in small collections and through the
per-dimension HNSW index (iterative scans) in large ones (``search``); keywords by full
text.
"""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from embedgate.docstore.base import Collection, CollectionExists, Limits, Usage
from embedgate.docstore.pgvector import queries as q
from embedgate.docstore.pgvector import registry as pg_registry
from embedgate.docstore.pgvector.collection import PgCollection
from embedgate.docstore.pgvector.index import (
    IndexBackoff,
    IndexBuildCrashed,
    ensure_index,
    index_type,
)
from embedgate.docstore.pgvector.schema import install
from embedgate.docstore.pgvector.transactions import (
    Connection,
    Transactions,
    check_caps,
    lock_capped,
    one,
    to_collection,
    usage,
)
from embedgate.docstore.pgvector.vector_type import register_vector
from embedgate.docstore.tenant_gate import DEFAULT_LIMIT, TenantGate

DEFAULT_ROLE = "embedgate_app"

# While the database is down a request waits at most POOL_TIMEOUT_S for a connection
# (then 503 database_unavailable). The pool retries a lost connection with backoff, but
# gives up after RECONNECT_S; the next request starts a fresh attempt at once, so a
# database that is back is used within seconds, however long it was away.
POOL_TIMEOUT_S, RECONNECT_S, CONNECT_TIMEOUT_S = 5.0, 4.0, 5
INDEX_RETRY_S = 60.0  # after an index build crashed the server (pg_index.IndexBackoff)


def conninfo(url: str) -> str:
    """A libpq URL from ``postgresql://`` or SQLAlchemy's ``postgresql+psycopg://`` (the
    database URL's form, which the vector URL defaults to)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError("the vector store URL must be postgresql://user@host:port/database")
    return f"postgresql://{rest}"


class PgVectorStore:
    backend = "pgvector"

    def __init__(
        self, pool: AsyncConnectionPool[Connection], role: str, index_retry_s: float,
        tenant_concurrency: int = DEFAULT_LIMIT,
    ) -> None:  # fmt: skip
        self._pool = pool
        self._indexed: set[int] = set()
        self._index_lock = asyncio.Lock()  # one build at a time here; waiters see a backoff
        self._backoff = IndexBackoff(index_retry_s)
        self._gate = TenantGate(tenant_concurrency)  # pool connections a tenant may hold
        self._tx = Transactions(pool, role, self._gate)

    @classmethod
    async def open(
        cls, url: str, *, role: str = DEFAULT_ROLE, min_size: int = 1, max_size: int = 10,
        index_retry_s: float = INDEX_RETRY_S, tenant_concurrency: int = DEFAULT_LIMIT,
    ) -> PgVectorStore:  # fmt: skip
        """Install or check the schema (see pg_schema), then open a connection pool.
        The URL's login owns the schema and may ``SET ROLE`` to ``role``."""
        info = conninfo(url)
        async with await AsyncConnection.connect(info, autocommit=True) as connection:
            oid = await install(connection, role)

        async def configure(connection: Connection) -> None:
            register_vector(connection, oid)

        pool = AsyncConnectionPool(
            info, min_size=min_size, max_size=max_size,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            configure=configure, check=AsyncConnectionPool.check_connection, open=False,
            name="embedgate-pgvector", timeout=POOL_TIMEOUT_S, reconnect_timeout=RECONNECT_S,
        )  # fmt: skip
        await pool.open(wait=True)
        return cls(pool, role, index_retry_s, tenant_concurrency)

    async def ping(self) -> None:
        async with self._pool.connection() as connection:
            await connection.execute("SELECT 1")

    async def aclose(self) -> None:
        await self._pool.close()

    def index_health(self) -> dict[str, Any]:
        """What /health adds: the dimension counts whose index build crashed the server."""
        crashed = self._backoff.state()
        return {"index_backoff": crashed} if crashed else {}

    # collections

    async def create_collection(
        self, tenant: str, collection: Collection, limits: Limits | None = None
    ) -> None:
        dims = collection.dimensions
        if index_type(dims) and dims not in self._indexed:
            async with self._gate.hold(tenant):
                await self._ensure_index(dims)
        c = collection
        params = [tenant, c.name, c.model, dims, Jsonb(c.metadata), c.created_at]
        async with self._tx.writer(tenant) as connection:
            await lock_capped(connection, tenant, limits)
            created = await one(connection, q.CREATE_COLLECTION, params)
            if created is not None:
                await check_caps(connection, tenant, limits)
        if created is None:
            raise CollectionExists(collection.name)

    async def _ensure_index(self, dims: int) -> None:
        """The index first, the collection row after: a build that fails leaves no
        collection. A build that crashed the server is not retried during its backoff."""
        async with self._index_lock:
            if dims in self._indexed:
                return
            self._backoff.check(dims)
            try:
                async with self._pool.connection() as connection:
                    await ensure_index(connection, dims)
            except IndexBuildCrashed as exc:
                raise self._backoff.failed(dims, str(exc)) from None
            self._backoff.succeeded(dims)
            self._indexed.add(dims)

    async def list_collections(self, tenant: str) -> list[Collection]:
        async with self._tx.tenant(tenant) as connection:
            rows = await (await connection.execute(q.COLLECTIONS, [tenant])).fetchall()
        return [to_collection(row) for row in rows]

    def collection(self, tenant: str, name: str) -> PgCollection:
        return PgCollection(self._tx, tenant, name)

    async def tenant_usage(self, tenant: str) -> Usage:
        async with self._tx.tenant(tenant) as connection:
            return await usage(connection, tenant, with_bytes=True)

    async def delete_tenant(self, tenant: str) -> None:
        # The mark commits on its own, at once: every replica refuses the tenant's writes
        # from here on, however long removing its rows takes.
        async with self._tx.tenant(tenant) as connection:
            await pg_registry.mark_deleted(connection, tenant)
        await self._purge(tenant)

    async def sweep(self, live: set[str]) -> int:
        """Ignores ``live`` (see base.py): removes the rows of tenants marked deleted whose
        removal a crash cut short."""
        async with self._pool.connection() as connection:
            doomed = await pg_registry.unpurged(connection)
        for tenant in doomed:
            await self._purge(tenant)
        return len(doomed)

    async def _purge(self, tenant: str) -> None:
        async with self._tx.tenant(tenant) as connection:
            await connection.execute(q.DELETE_COLLECTIONS, [tenant])
            await pg_registry.mark_purged(connection, tenant)
