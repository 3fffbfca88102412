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

import shutil
from pathlib import Path
from typing import Any

from embedgate.docstore.base import Collection, CollectionExists, Limits, Usage
from embedgate.docstore.local import db as local_db
from embedgate.docstore.local import usage as local_usage
from embedgate.docstore.local.cache import Tenant, TenantCache, directory_name
from embedgate.docstore.local.collection import LocalCollection
from embedgate.docstore.local.db import transaction
from embedgate.docstore.local.threads import TenantThreads
from embedgate.docstore.local.tombstones import Tombstones
from embedgate.docstore.local.vectors import Vectors
from embedgate.docstore.tenant_gate import DEFAULT_LIMIT, TenantGate


class LocalDocumentStore:
    """``DocumentStore`` on local files; every blocking call runs in a worker thread
    (threads.py). A collection's calls are its handle's (collection.py).

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
        self._tombstones = Tombstones(self._cache.root)
        self._threads = TenantThreads(self._cache, TenantGate(tenant_concurrency),
                                      self._tombstones)  # fmt: skip

    @classmethod
    async def open(cls, data_dir: Path, **options: Any) -> LocalDocumentStore:
        store = cls(data_dir, **options)
        await store.ping()
        return store

    @property
    def cache(self) -> TenantCache:
        return self._cache

    async def ping(self) -> None:
        await self._threads.run(self._make_root)

    async def aclose(self) -> None:
        await self._threads.run(self._cache.close_all)

    async def create_collection(
        self, tenant: str, collection: Collection, limits: Limits | None = None
    ) -> None:
        await self._threads.write(tenant, self._create_collection, collection, limits)

    async def list_collections(self, tenant: str) -> list[Collection]:
        return await self._threads.read(tenant, local_db.select_collections) or []

    def collection(self, tenant: str, name: str) -> LocalCollection:
        return LocalCollection(self._threads, self._vectors, tenant, name)

    async def tenant_usage(self, tenant: str) -> Usage:
        return await self._threads.read(tenant, local_usage.usage) or Usage()

    async def delete_tenant(self, tenant: str) -> None:
        await self._threads.call(tenant, self._delete_tenant)

    async def sweep(self, live: set[str]) -> int:
        """One process owns the data dir, so every directory of no live tenant is a crash's
        leftover (see base.py). Run at start, before any request."""
        return await self._threads.run(self._sweep, {directory_name(uid) for uid in live})

    # -- in worker threads (threads.py), under the tenant's lock ------------------------

    def _make_root(self) -> None:
        self._cache.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._cache.root.chmod(0o700)

    def _create_collection(self, tenant: Tenant, collection: Collection,
                           limits: Limits | None) -> None:  # fmt: skip
        self._make_root()
        conn = self._cache.connection(tenant, create=True)
        assert conn is not None
        with transaction(conn):
            created = local_db.insert_collection(conn, collection)
            if created:
                local_usage.check(conn, limits)
        if not created:
            raise CollectionExists(collection.name)

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
