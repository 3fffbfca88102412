"""The embedded document store: one directory per tenant, SQLite + FTS5 + HNSW files.

    <data_dir>/tenants/                  0700
        deleted                          deleted tenants' directory names (local_tombstones)
        <sha256(tenant uid)[:32]>/       0700, one per tenant that ever created a collection
            documents.db (+ -wal, -shm)  collections, documents with vectors, FTS5 index
            collection-<id>.json         sidecar of a saved HNSW graph (large collections)
            collection-<id>-<token>.usearch

SQLite is the source of truth: a write returns once committed (WAL, synchronous=FULL).
Vector indexes are loaded on first use, kept under a memory budget and caught up from
the database when their saved files are older than it. See docs/storage.md.
"""

from __future__ import annotations

import functools
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from embedgate.docstore.base import (
    Collection,
    CollectionExists,
    Document,
    Filter,
    Hit,
    Limits,
    TenantDeleted,
    Upsert,
    Usage,
    Vector,
    capping,
    check_limits,
)
from embedgate.docstore.local import db as local_db
from embedgate.docstore.local import docs as local_docs
from embedgate.docstore.local import index_files as local_index_files
from embedgate.docstore.local import usage as local_usage
from embedgate.docstore.local.cache import Tenant, TenantCache, directory_name
from embedgate.docstore.local.db import transaction
from embedgate.docstore.local.tombstones import Tombstones
from embedgate.docstore.local.vectors import Vectors
from embedgate.docstore.tenant_gate import DEFAULT_LIMIT, TenantGate

T = TypeVar("T")


class LocalDocumentStore:
    """``DocumentStore`` on local files; every blocking call runs in a worker thread.

    ``exact_threshold``: collections with up to this many vectors are searched exactly
    (numpy), larger ones through an HNSW graph. ``memory_budget_bytes``: loaded vectors and
    graphs, all tenants together. ``max_open_tenants``: SQLite databases open at once.
    ``tenant_concurrency``: worker threads one tenant's calls hold at once (tenant_gate).
    """

    backend = "local"

    def __init__(
        self, data_dir: Path, *, exact_threshold: int = 20_000,
        memory_budget_bytes: int = 1 << 30, max_open_tenants: int = 256,
        tenant_concurrency: int = DEFAULT_LIMIT,
    ) -> None:  # fmt: skip
        self.data_dir = Path(data_dir)
        self._cache = TenantCache(self.data_dir / "tenants", max_open=max_open_tenants,
                                  budget=memory_budget_bytes)  # fmt: skip
        self._vectors = Vectors(self._cache, exact_threshold)
        self._gate = TenantGate(tenant_concurrency)
        self._tombstones = Tombstones(self._cache.root)

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

    async def create_collection(
        self, tenant: str, collection: Collection, limits: Limits | None = None
    ) -> None:
        await self._tenant_write(tenant, self._create_collection, collection, limits)

    async def get_collection(self, tenant: str, name: str) -> Collection | None:
        return await self._read(tenant, local_db.select_collection, name)

    async def list_collections(self, tenant: str) -> list[Collection]:
        return await self._read(tenant, local_db.select_collections) or []

    async def delete_collection(self, tenant: str, name: str) -> bool:
        return await self._tenant_write(tenant, self._delete_collection, name)

    async def text_hashes(self, tenant: str, name: str, ids: Sequence[str]) -> dict[str, str]:
        found = await self._in_collection(tenant, name, local_docs.text_hashes, ids)
        return found or {}

    async def upsert(
        self, tenant: str, name: str, items: Sequence[Upsert], limits: Limits | None = None
    ) -> None:
        await self._tenant_write(tenant, self._upsert, name, items, limits)

    async def get_document(self, tenant: str, name: str, doc_id: str) -> Document | None:
        return await self._in_collection(tenant, name, local_docs.get_document, doc_id)

    async def get_vector(self, tenant: str, name: str, doc_id: str) -> Vector | None:
        return await self._in_collection(tenant, name, local_docs.get_vector, doc_id)

    async def list_documents(
        self, tenant: str, name: str, *, after: str | None, limit: int
    ) -> list[Document]:
        found = await self._in_collection(tenant, name, local_docs.list_documents, after, limit)
        return found or []

    async def export_documents(
        self, tenant: str, name: str, *, after: str | None, limit: int
    ) -> list[Upsert]:
        found = await self._in_collection(tenant, name, local_docs.export_documents, after,
                                          limit)  # fmt: skip
        return found or []

    async def delete_document(self, tenant: str, name: str, doc_id: str) -> bool:
        return await self._tenant_write(tenant, self._delete_document, name, doc_id)

    async def search_vector(
        self, tenant: str, name: str, query: Vector, *, top_k: int, filter: Filter | None,
        min_score: float | None,
    ) -> list[Hit]:  # fmt: skip
        search = functools.partial(self._search_vector, query=query, top_k=top_k, flt=filter,
                                   min_score=min_score)  # fmt: skip
        return await self._tenant_call(tenant, search, name)

    async def search_keyword(
        self, tenant: str, name: str, query: str, *, top_k: int, filter: Filter | None
    ) -> list[Hit]:
        found = await self._in_collection(tenant, name, local_docs.keyword_search, query, top_k,
                                          filter)  # fmt: skip
        return found or []

    async def tenant_usage(self, tenant: str) -> Usage:
        return await self._read(tenant, local_usage.usage) or Usage()

    async def delete_tenant(self, tenant: str) -> None:
        await self._tenant_call(tenant, self._delete_tenant)

    async def sweep(self, live: set[str]) -> int:
        """One process owns the data dir, so every directory of no live tenant is a crash's
        leftover (see base.py). Run at start, before any request."""
        return await self._run(self._sweep, {directory_name(uid) for uid in live})

    # -- in worker threads, under the tenant's lock ------------------------------------

    def _make_root(self) -> None:
        self._cache.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._cache.root.chmod(0o700)

    def _locked(self, tenant_id: str, body: Callable[..., T], *args: Any) -> T:
        tenant = self._cache.tenant(tenant_id)
        with tenant.lock:
            return body(tenant, *args)

    def _writing(self, tenant_id: str, body: Callable[..., T], *args: Any) -> T:
        """``_locked`` for writes: a deleted tenant's are refused under its lock, so none
        runs beside or after its delete."""
        tenant = self._cache.tenant(tenant_id)
        with tenant.lock:
            if tenant.key in self._tombstones:
                raise TenantDeleted()
            return body(tenant, *args)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))

    async def _tenant_call(self, tenant: str, body: Callable[..., T], *args: Any) -> T:
        """``body(handle, *args)`` under the tenant's lock, in a thread taken only once
        the tenant is within its share of threads (the wait is on the event loop)."""
        async with self._gate.hold(tenant):
            return await self._run(self._locked, tenant, body, *args)

    async def _tenant_write(self, tenant: str, body: Callable[..., T], *args: Any) -> T:
        """``_tenant_call`` for writes: refused once the tenant is deleted (``_writing``)."""
        async with self._gate.hold(tenant):
            return await self._run(self._writing, tenant, body, *args)

    async def _read(self, tenant: str, query: Callable[..., T], *args: Any) -> T | None:
        def body(handle: Tenant) -> T | None:
            conn = self._cache.connection(handle, create=False)
            return None if conn is None else query(conn, *args)

        return await self._tenant_call(tenant, body)

    async def _in_collection(self, tenant: str, name: str, query: Callable[..., T],
                             *args: Any) -> T | None:  # fmt: skip
        def body(handle: Tenant) -> T | None:
            conn = self._cache.connection(handle, create=False)
            key = None if conn is None else local_db.collection_key(conn, name)
            return None if conn is None or key is None else query(conn, key[0], *args)

        return await self._tenant_call(tenant, body)

    def _create_collection(self, tenant: Tenant, collection: Collection,
                           limits: Limits | None) -> None:  # fmt: skip
        self._make_root()
        conn = self._cache.connection(tenant, create=True)
        assert conn is not None
        with transaction(conn):
            created = local_db.insert_collection(conn, collection)
            if created:
                self._check(conn, limits)
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

    def _upsert(self, tenant: Tenant, name: str, items: Sequence[Upsert],
                limits: Limits | None) -> None:  # fmt: skip
        conn = self._cache.connection(tenant, create=False)
        if conn is None:
            raise LookupError("no such collection")
        with transaction(conn):
            key = local_db.collection_key(conn, name)
            if key is None:
                raise LookupError("no such collection")
            changes = local_docs.write_documents(conn, key, items)
            self._check(conn, limits)
        self._vectors.apply(tenant, key, changes)

    @staticmethod
    def _check(conn: sqlite3.Connection, limits: Limits | None) -> None:
        """Inside the write's transaction: over a cap, it raises and so rolls back."""
        if (capped := capping(limits)) is not None:
            with_bytes = capped.stored_bytes is not None
            check_limits(capped, local_usage.usage(conn, with_bytes=with_bytes))

    def _delete_document(self, tenant: Tenant, name: str, doc_id: str) -> bool:
        conn = self._cache.connection(tenant, create=False)
        if conn is None:
            return False
        with transaction(conn):
            key = local_db.collection_key(conn, name)
            change = None if key is None else local_docs.delete_document(conn, key, doc_id)
        if key is None or change is None:
            return False
        self._vectors.apply(tenant, key, [change])
        return True

    def _search_vector(
        self, tenant: Tenant, name: str, *, query: Vector, top_k: int, flt: Filter | None,
        min_score: float | None,
    ) -> list[Hit]:  # fmt: skip
        conn = self._cache.connection(tenant, create=False)
        key = None if conn is None else local_db.collection_key(conn, name)
        if conn is None or key is None:
            return []
        scored = self._vectors.search(tenant, conn, key, query, top_k, flt)
        if min_score is not None:
            scored = [(label, score) for label, score in scored if score >= min_score]
        return local_docs.hits(conn, scored)

    def _sweep(self, live: set[str]) -> int:
        self._make_root()
        removed = 0
        for entry in self._cache.root.iterdir():
            if entry.is_dir() and entry.name not in live:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        self._tombstones.keep_only(live)  # a half-deleted tenant stays refused
        return removed

    def _delete_tenant(self, tenant: Tenant) -> None:
        self._make_root()
        self._tombstones.add(tenant.key)  # first: a crash after it still refuses writes
        self._cache.drop_tenant(tenant)
        shutil.rmtree(tenant.directory, ignore_errors=True)
        if tenant.directory.exists():
            raise OSError("could not remove the tenant's directory")
