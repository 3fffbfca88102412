"""The embedded document store: one directory per tenant, SQLite + FTS5 + HNSW files.

    <data_dir>/tenants/                  0700
        <sha256(tenant id)[:32]>/        0700, one per tenant that ever created a collection
            documents.db (+ -wal, -shm)  collections, documents with vectors, FTS5 index
            collection-<id>.json         sidecar of a saved HNSW graph (large collections)
            collection-<id>-<token>.usearch

SQLite is the source of truth: a write returns once committed (WAL, synchronous=FULL).
Vector indexes are loaded on first use, kept under a memory budget and caught up from
the database when their saved files are older than it. See docs/storage.md.
"""

from __future__ import annotations

import functools
import logging
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import numpy as np

from embedgate.search import local_db, local_docs, local_index_files
from embedgate.search.base import (
    Collection,
    CollectionExists,
    Document,
    Filter,
    Hit,
    Upsert,
    Vector,
)
from embedgate.search.local_cache import Tenant, TenantCache
from embedgate.search.local_db import transaction
from embedgate.search.local_index import VectorIndex

log = logging.getLogger(__name__)
T = TypeVar("T")
CollectionKey = tuple[int, int, int]  # (id, dimensions, version)


class LocalDocumentStore:
    """``DocumentStore`` on local files; every blocking call runs in a worker thread.

    ``exact_threshold``: collections with up to this many vectors are searched exactly
    (numpy), larger ones through an HNSW graph. ``memory_budget_bytes``: loaded vectors and graphs,
    all tenants together. ``max_open_tenants``: SQLite databases open at once.
    """

    backend = "local"

    def __init__(
        self, data_dir: Path, *, exact_threshold: int = 20_000,
        memory_budget_bytes: int = 1 << 30, max_open_tenants: int = 256,
    ) -> None:  # fmt: skip
        self.data_dir = Path(data_dir)
        self.exact_threshold = exact_threshold
        self._cache = TenantCache(self.data_dir / "tenants", max_open=max_open_tenants,
                                  budget=memory_budget_bytes)  # fmt: skip

    @classmethod
    async def open(cls, data_dir: Path, **options: Any) -> LocalDocumentStore:
        store = cls(data_dir, **options)
        await store.ping()
        return store

    @property
    def cache(self) -> TenantCache:
        return self._cache

    async def ping(self) -> None:
        await self._run(self._make_root)

    async def aclose(self) -> None:
        await self._run(self._cache.close_all)

    async def create_collection(self, tenant: str, collection: Collection) -> None:
        await self._run(self._locked, tenant, self._create_collection, collection)

    async def get_collection(self, tenant: str, name: str) -> Collection | None:
        return await self._read(tenant, local_db.select_collection, name)

    async def list_collections(self, tenant: str) -> list[Collection]:
        return await self._read(tenant, local_db.select_collections) or []

    async def delete_collection(self, tenant: str, name: str) -> bool:
        return await self._run(self._locked, tenant, self._delete_collection, name)

    async def text_hashes(self, tenant: str, name: str, ids: Sequence[str]) -> dict[str, str]:
        found = await self._in_collection(tenant, name, local_docs.text_hashes, ids)
        return found or {}

    async def upsert(self, tenant: str, name: str, items: Sequence[Upsert]) -> None:
        await self._run(self._locked, tenant, self._upsert, name, items)

    async def get_document(self, tenant: str, name: str, doc_id: str) -> Document | None:
        return await self._in_collection(tenant, name, local_docs.get_document, doc_id)

    async def get_vector(self, tenant: str, name: str, doc_id: str) -> Vector | None:
        return await self._in_collection(tenant, name, local_docs.get_vector, doc_id)

    async def list_documents(
        self, tenant: str, name: str, *, after: str | None, limit: int
    ) -> list[Document]:
        found = await self._in_collection(tenant, name, local_docs.list_documents, after, limit)
        return found or []

    async def delete_document(self, tenant: str, name: str, doc_id: str) -> bool:
        return await self._run(self._locked, tenant, self._delete_document, name, doc_id)

    async def search_vector(
        self, tenant: str, name: str, query: Vector, *, top_k: int, filter: Filter | None,
        min_score: float | None,
    ) -> list[Hit]:  # fmt: skip
        search = functools.partial(self._search_vector, query=query, top_k=top_k, flt=filter,
                                   min_score=min_score)  # fmt: skip
        return await self._run(self._locked, tenant, search, name)

    async def search_keyword(
        self, tenant: str, name: str, query: str, *, top_k: int, filter: Filter | None
    ) -> list[Hit]:
        found = await self._in_collection(tenant, name, local_docs.keyword_search, query, top_k,
                                          filter)  # fmt: skip
        return found or []

    async def delete_tenant(self, tenant: str) -> None:
        await self._run(self._locked, tenant, self._delete_tenant)

    # -- in worker threads, under the tenant's lock ------------------------------------

    def _make_root(self) -> None:
        self._cache.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._cache.root.chmod(0o700)

    def _locked(self, tenant_id: str, body: Callable[..., T], *args: Any) -> T:
        tenant = self._cache.tenant(tenant_id)
        with tenant.lock:
            return body(tenant, *args)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))

    async def _read(self, tenant: str, query: Callable[..., T], *args: Any) -> T | None:
        def body(handle: Tenant) -> T | None:
            conn = self._cache.connection(handle, create=False)
            return None if conn is None else query(conn, *args)

        return await self._run(self._locked, tenant, body)

    async def _in_collection(self, tenant: str, name: str, query: Callable[..., T],
                             *args: Any) -> T | None:  # fmt: skip
        def body(handle: Tenant) -> T | None:
            conn = self._cache.connection(handle, create=False)
            key = None if conn is None else local_db.collection_key(conn, name)
            return None if conn is None or key is None else query(conn, key[0], *args)

        return await self._run(self._locked, tenant, body)

    def _create_collection(self, tenant: Tenant, collection: Collection) -> None:
        self._make_root()
        conn = self._cache.connection(tenant, create=True)
        assert conn is not None
        with transaction(conn):
            created = local_db.insert_collection(conn, collection)
        if not created:
            raise CollectionExists(collection.name)

    def _delete_collection(self, tenant: Tenant, name: str) -> bool:
        conn = self._cache.connection(tenant, create=False)
        key = None if conn is None else local_db.collection_key(conn, name)
        if conn is None or key is None:
            return False
        with transaction(conn):
            local_db.delete_collection_rows(conn, key[0])
        self._cache.drop_index(tenant, key[0])
        local_index_files.remove(tenant.directory, key[0])
        local_db.purge(conn)
        return True

    def _upsert(self, tenant: Tenant, name: str, items: Sequence[Upsert]) -> None:
        conn = self._cache.connection(tenant, create=False)
        if conn is None:
            raise LookupError("no such collection")
        with transaction(conn):
            key = local_db.collection_key(conn, name)
            if key is None:
                raise LookupError("no such collection")
            changes = local_docs.write_documents(conn, key, items)
        self._apply(tenant, key, changes)

    def _delete_document(self, tenant: Tenant, name: str, doc_id: str) -> bool:
        conn = self._cache.connection(tenant, create=False)
        if conn is None:
            return False
        with transaction(conn):
            key = local_db.collection_key(conn, name)
            change = None if key is None else local_docs.delete_document(conn, key, doc_id)
        if key is None or change is None:
            return False
        self._apply(tenant, key, [change])
        return True

    def _search_vector(
        self, tenant: Tenant, name: str, *, query: Vector, top_k: int, flt: Filter | None,
        min_score: float | None,
    ) -> list[Hit]:  # fmt: skip
        conn = self._cache.connection(tenant, create=False)
        key = None if conn is None else local_db.collection_key(conn, name)
        if conn is None or key is None:
            return []
        index = self._index(tenant, conn, key)
        scored = None
        if flt:  # a broad filter is checked on the graph's candidates only
            keep = functools.partial(local_docs.matching, conn, key[0], flt)
            scored = index.search_broad(query, top_k, keep)
        if scored is None:
            allowed = local_docs.labels(conn, key[0], flt) if flt else None
            scored = index.search(query, top_k, allowed)
        if min_score is not None:
            scored = [(label, score) for label, score in scored if score >= min_score]
        return local_docs.hits(conn, scored)

    def _delete_tenant(self, tenant: Tenant) -> None:
        self._cache.drop_tenant(tenant)
        shutil.rmtree(tenant.directory, ignore_errors=True)
        if tenant.directory.exists():
            raise OSError("could not remove the tenant's directory")

    # -- vector indexes ---------------------------------------------------------------

    def _index(self, tenant: Tenant, conn: sqlite3.Connection, key: CollectionKey) -> VectorIndex:
        """The collection's index, loaded (and caught up) on first use."""
        collection_id, dimensions, version = key
        index = self._cache.index(tenant, collection_id)
        if index is not None and index.version == version:
            return index
        query = "SELECT label, version, vector FROM documents WHERE collection_id = ? ORDER BY 1"
        rows = conn.execute(query, (collection_id,)).fetchall()
        labels = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(row[2] for row in rows), dtype="<f4")
        index = VectorIndex(dimensions, version, self.exact_threshold)
        index.load(labels, matrix.reshape(len(rows), dimensions))
        if index.count > self.exact_threshold:
            changed = np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows))
            if not local_index_files.attach(index, tenant.directory, collection_id, changed):
                index.ensure_graph()
        self._keep(tenant, collection_id, index)
        return index

    def _apply(self, tenant: Tenant, key: CollectionKey,
               changes: list[local_docs.Change]) -> None:  # fmt: skip
        """Bring a loaded index in step with a committed write (else it loads later)."""
        index = self._cache.index(tenant, key[0])
        if index is None:
            return
        try:
            index.apply(dict(changes), key[2] + 1)
        except (ValueError, RuntimeError) as exc:  # committed anyway: reload on next use
            log.warning("dropping a vector index of tenant %s: %s", tenant.key, exc)
            self._cache.drop_index(tenant, key[0])
            return
        self._keep(tenant, key[0], index)

    def _keep(self, tenant: Tenant, collection_id: int, index: VectorIndex) -> None:
        """Save a graph that has drifted far from its files, then account for its size."""
        if index.graph is not None and index.unsaved >= max(1, index.count // 10):
            try:
                local_index_files.save(index, tenant.directory, collection_id)
            except OSError as exc:
                log.warning("could not save a vector index of tenant %s: %s", tenant.key, exc)
        self._cache.put_index(tenant, collection_id, index)
