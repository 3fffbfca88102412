"""The document store on PostgreSQL + pgvector, for replicas that share one database.

Isolation is the database's job: every data transaction switches to the non-owner role
and names its tenant with ``set_config('embedgate.tenant', $1, true)``; row-level security
(forced, see ``pg_schema``) then hides and protects every other tenant's rows, whatever
the SQL says. Both settings end with the transaction, so a pooled connection carries
nothing to the next one. Vectors are searched exactly in small collections and through
the per-dimension HNSW index (iterative scans) in large ones; keywords by full text.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC
from typing import Any, NamedTuple

import numpy as np
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from embedgate.docstore.base import (
    Collection,
    CollectionExists,
    Document,
    Filter,
    Hit,
    Limits,
    Upsert,
    Usage,
    Vector,
    capping,
    check_limits,
)
from embedgate.docstore.pgvector import queries as q
from embedgate.docstore.pgvector import registry as pg_registry
from embedgate.docstore.pgvector.index import (
    IndexBackoff,
    IndexBuildCrashed,
    ensure_index,
    index_type,
)
from embedgate.docstore.pgvector.schema import install
from embedgate.docstore.pgvector.text import query_terms
from embedgate.docstore.pgvector.vector_type import register_vector
from embedgate.docstore.tenant_gate import DEFAULT_LIMIT, TenantGate

DEFAULT_ROLE = "embedgate_app"
# Up to these sizes an exact scan is about as fast as HNSW (~30 ms for 20k rows of 384
# dimensions) and always right; HNSW recall drops under selective filters, so filtered
# searches stay exact longer.
EXACT_MAX_DOCUMENTS, FILTERED_EXACT_MAX_DOCUMENTS = 20_000, 50_000
MIN_EF_SEARCH, MAX_EF_SEARCH = 100, 1000  # pgvector allows 1..1000
# An iterative scan's budget in index tuples. A tuple read through the index costs about
# 5x one read by an exact scan, so past a quarter of the collection exact is cheaper.
MIN_SCAN_TUPLES, MAX_SCAN_TUPLES = 10_000, 100_000

# While the database is down a request waits at most POOL_TIMEOUT_S for a connection
# (then 503 database_unavailable). The pool retries a lost connection with backoff, but
# gives up after RECONNECT_S; the next request starts a fresh attempt at once, so a
# database that is back is used within seconds, however long it was away.
POOL_TIMEOUT_S, RECONNECT_S, CONNECT_TIMEOUT_S = 5.0, 4.0, 5
INDEX_RETRY_S = 60.0  # after an index build crashed the server (pg_index.IndexBackoff)

Connection = AsyncConnection[Any]


class _Ref(NamedTuple):
    id: int
    dimensions: int
    document_count: int


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
        self._role = role
        self._indexed: set[int] = set()
        self._index_lock = asyncio.Lock()  # one build at a time here; waiters see a backoff
        self._backoff = IndexBackoff(index_retry_s)
        self._gate = TenantGate(tenant_concurrency)  # pool connections a tenant may hold

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

    @asynccontextmanager
    async def _tenant(self, tenant: str) -> AsyncIterator[Connection]:
        """One transaction as the non-owner role, confined to ``tenant`` by the database,
        on a connection taken once the tenant is within its share of the pool."""
        if not tenant:
            raise ValueError("a tenant id is required")
        async with (
            self._gate.hold(tenant), self._pool.connection() as connection,
            connection.transaction(),
        ):  # fmt: skip
            await connection.execute(q.BEGIN, [self._role, tenant])
            yield connection

    @asynccontextmanager
    async def _writer(self, tenant: str) -> AsyncIterator[Connection]:
        """``_tenant`` for writes: refused (``TenantDeleted``) once the tenant's delete has
        begun, on whichever replica; see pg_registry."""
        async with self._tenant(tenant) as connection:
            await pg_registry.check_writable(connection, tenant)
            yield connection

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
        async with self._writer(tenant) as connection:
            await _lock_capped(connection, tenant, limits)
            created = await _one(connection, q.CREATE_COLLECTION, params)
            if created is not None:
                await _check(connection, tenant, limits)
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

    async def get_collection(self, tenant: str, name: str) -> Collection | None:
        async with self._tenant(tenant) as connection:
            row = await _one(connection, q.COLLECTION, [tenant, name])
        return None if row is None else _collection(row)

    async def list_collections(self, tenant: str) -> list[Collection]:
        async with self._tenant(tenant) as connection:
            rows = await (await connection.execute(q.COLLECTIONS, [tenant])).fetchall()
        return [_collection(row) for row in rows]

    async def delete_collection(self, tenant: str, name: str) -> bool:
        async with self._writer(tenant) as connection:
            return (await connection.execute(q.DELETE_COLLECTION, [tenant, name])).rowcount > 0

    # documents

    async def text_hashes(self, tenant: str, name: str, ids: Sequence[str]) -> dict[str, str]:
        async with self._tenant(tenant) as connection:
            cursor = await connection.execute(q.TEXT_HASHES, [tenant, name, list(ids)])
            return {doc_id: digest for doc_id, digest in await cursor.fetchall()}

    async def upsert(
        self, tenant: str, name: str, items: Sequence[Upsert], limits: Limits | None = None
    ) -> None:
        fresh = [item for item in items if item.vector is not None]
        kept = [item for item in items if item.vector is None]
        async with self._writer(tenant) as connection:
            await _lock_capped(connection, tenant, limits)
            ref = await _ref(connection, tenant, name, lock=True)
            if ref is None:
                raise LookupError(f"no collection named {name!r}")
            rows = [_row(tenant, ref, item) for item in fresh]
            created = await _count_new(connection, ref, {item.document.id for item in fresh})
            async with connection.cursor() as cursor:
                if rows:
                    await cursor.executemany(q.UPSERT, rows)
                if kept:
                    metadata = [[Jsonb(i.document.metadata), ref.id, i.document.id] for i in kept]
                    await cursor.executemany(q.SET_METADATA, metadata)
            if created:
                await connection.execute(q.ADD_COUNT, [created, ref.id])
            await _check(connection, tenant, limits)

    async def get_document(self, tenant: str, name: str, doc_id: str) -> Document | None:
        async with self._tenant(tenant) as connection:
            row = await _one(connection, q.DOCUMENT, [tenant, name, doc_id])
        return None if row is None else Document(*row)

    async def get_vector(self, tenant: str, name: str, doc_id: str) -> Vector | None:
        async with self._tenant(tenant) as connection:
            cursor = await connection.execute(q.VECTOR, [tenant, name, doc_id], binary=True)
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def list_documents(
        self, tenant: str, name: str, *, after: str | None, limit: int
    ) -> list[Document]:
        # limit + 1 rows tell the caller whether there is a next page (see base.py).
        async with self._tenant(tenant) as connection:
            cursor = await connection.execute(q.PAGE, [tenant, name, after, after, limit + 1])
            return [Document(*row) for row in await cursor.fetchall()]

    async def export_documents(
        self, tenant: str, name: str, *, after: str | None, limit: int
    ) -> list[Upsert]:
        params = [tenant, name, after, after, limit]
        async with self._tenant(tenant) as connection:
            cursor = await connection.execute(q.EXPORT, params, binary=True)
            rows = await cursor.fetchall()
        return [Upsert(Document(i, text, meta), digest, vector)
                for i, text, meta, digest, vector in rows]  # fmt: skip

    async def delete_document(self, tenant: str, name: str, doc_id: str) -> bool:
        async with self._writer(tenant) as connection:
            ref = await _ref(connection, tenant, name, lock=True)
            if ref is None:
                return False
            deleted = (await connection.execute(q.DELETE_DOCUMENT, [ref.id, doc_id])).rowcount
            if deleted:
                await connection.execute(q.ADD_COUNT, [-deleted, ref.id])
        return deleted > 0

    # search

    async def search_vector(
        self, tenant: str, name: str, query: Vector, *, top_k: int, filter: Filter | None,
        min_score: float | None,
    ) -> list[Hit]:  # fmt: skip
        where, params = q.metadata_filter(filter)
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        async with self._tenant(tenant) as connection:
            ref = await _ref(connection, tenant, name)
            if ref is None or vector.shape[0] != ref.dimensions:
                return []
            params |= {"query": vector, "collection": ref.id, "tenant": tenant, "top_k": top_k}
            rows = await _approximate(connection, ref, where, params, bool(filter))
            if rows is None:
                rows = await _all(connection, q.exact_search(where), params)
        hits = _hits(rows)
        return [hit for hit in hits if min_score is None or hit.score >= min_score]

    async def search_keyword(
        self, tenant: str, name: str, query: str, *, top_k: int, filter: Filter | None
    ) -> list[Hit]:
        where, params = q.metadata_filter(filter)
        async with self._tenant(tenant) as connection:
            ref = await _ref(connection, tenant, name)
            if ref is None:
                return []
            terms = query_terms(query)
            found = await _one(connection, q.TSQUERIES, [terms]) if terms else None
            if found is None or found[0] is None:
                return []
            params |= {f"term_{n}": term for n, term in enumerate(found[1])}
            params |= {"any": found[0], "collection": ref.id, "tenant": tenant, "top_k": top_k}
            statement = q.keyword_search(len(found[1]), where)
            cursor = await connection.execute(statement, params, prepare=False)
            return _hits(await cursor.fetchall())

    async def tenant_usage(self, tenant: str) -> Usage:
        async with self._tenant(tenant) as connection:
            return await _usage(connection, tenant, with_bytes=True)

    async def delete_tenant(self, tenant: str) -> None:
        # The mark commits on its own, at once: every replica refuses the tenant's writes
        # from here on, however long removing its rows takes.
        async with self._tenant(tenant) as connection:
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
        async with self._tenant(tenant) as connection:
            await connection.execute(q.DELETE_TENANT, [tenant])
            await pg_registry.mark_purged(connection, tenant)


async def _approximate(
    connection: Connection, ref: _Ref, where: sql.Composable, params: dict[str, Any],
    filtered: bool,
) -> list[Any] | None:  # fmt: skip
    """Top-k through the HNSW index, or None where an exact scan must answer: small
    collections, no index for the dimensions, or an iterative scan that ran out of budget
    before finding top_k matches (a selective filter), so that filtered top_k is complete."""
    kind = index_type(ref.dimensions)
    exact_max = FILTERED_EXACT_MAX_DOCUMENTS if filtered else EXACT_MAX_DOCUMENTS
    if kind is None or ref.document_count <= exact_max:
        return None
    top_k = int(params["top_k"])
    ef_search = min(MAX_EF_SEARCH, max(MIN_EF_SEARCH, 2 * top_k))
    budget = min(MAX_SCAN_TUPLES, max(MIN_SCAN_TUPLES, ref.document_count // 4))
    await connection.execute(q.HNSW_SETTINGS, [str(ef_search), str(budget)])
    rows = await _all(connection, q.hnsw_search(ref.dimensions, kind, where), params)
    await connection.execute(q.PLANNER_DEFAULTS)
    return rows if len(rows) >= min(top_k, ref.document_count) else None


async def _lock_capped(connection: Connection, tenant: str, limits: Limits | None) -> None:
    """Before a capped write reads anything: one capped writer per tenant at a time."""
    if capping(limits) is not None:
        await connection.execute(q.CAPPED_WRITE, [tenant])


async def _check(connection: Connection, tenant: str, limits: Limits | None) -> None:
    """After the write, in its transaction: over a cap, it raises and so rolls back."""
    if (capped := capping(limits)) is not None:
        with_bytes = capped.stored_bytes is not None
        check_limits(capped, await _usage(connection, tenant, with_bytes=with_bytes))


async def _usage(connection: Connection, tenant: str, *, with_bytes: bool) -> Usage:
    collections, documents, collection_bytes = await _one(connection, q.USAGE, [tenant])
    document_bytes = 0
    if with_bytes:
        (document_bytes,) = await _one(connection, q.DOCUMENT_BYTES, [tenant])
    return Usage(int(collections), int(documents),
                 int(collection_bytes) + int(document_bytes) if with_bytes else 0)  # fmt: skip


async def _ref(
    connection: Connection, tenant: str, name: str, *, lock: bool = False
) -> _Ref | None:
    row = await _one(connection, q.LOCK_REF if lock else q.REF, [tenant, name])
    return None if row is None else _Ref(*row)


async def _count_new(connection: Connection, ref: _Ref, ids: set[str]) -> int:
    existing = await _one(connection, q.EXISTING, [ref.id, list(ids)]) if ids else None
    return len(ids) - (int(existing[0]) if existing is not None else 0)


async def _one(connection: Connection, query: str, params: Sequence[Any]) -> Any:
    return await (await connection.execute(query, params)).fetchone()


async def _all(connection: Connection, query: sql.Composed, params: dict[str, Any]) -> list[Any]:
    return await (await connection.execute(query, params)).fetchall()


def _hits(rows: list[Any]) -> list[Hit]:
    return [Hit(doc_id, text, float(score), metadata) for doc_id, text, metadata, score in rows]


def _row(tenant: str, ref: _Ref, item: Upsert) -> list[Any]:
    vector = np.asarray(item.vector, dtype=np.float32).reshape(-1)
    if vector.shape[0] != ref.dimensions:
        raise ValueError(
            f"document {item.document.id!r}: {vector.shape[0]} dimensions, "
            f"the collection has {ref.dimensions}"
        )
    doc = item.document
    return [ref.id, doc.id, tenant, ref.dimensions, doc.text, item.text_hash,
            Jsonb(doc.metadata), vector]  # fmt: skip


def _collection(row: Sequence[Any]) -> Collection:
    name, model, dimensions, metadata, created_at, count = row
    return Collection(name, model, dimensions, metadata, created_at.astimezone(UTC), count)
