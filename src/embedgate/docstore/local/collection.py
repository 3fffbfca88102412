"""A collection of the embedded store (``base.CollectionHandle``).

Every call runs under the tenant's lock (``threads``), so the handle binds to its
collection's id once, there: the first call that finds the name. After that, reads go
straight to the documents of that id (a deleted collection's documents went with it in
the same transaction, so they find nothing), and writes and vector searches read the
collection's row by id, for its dimensions and version, inside their transaction.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from embedgate.docstore.base import Collection, Document, Filter, Hit, Limits, Upsert, Vector
from embedgate.docstore.local import db as local_db
from embedgate.docstore.local import docs as local_docs
from embedgate.docstore.local import index_files as local_index_files
from embedgate.docstore.local import usage as local_usage
from embedgate.docstore.local.cache import Tenant
from embedgate.docstore.local.db import Key, transaction
from embedgate.docstore.local.threads import TenantThreads
from embedgate.docstore.local.vectors import Vectors

T = TypeVar("T")


class LocalCollection:
    def __init__(self, threads: TenantThreads, vectors: Vectors, tenant: str, name: str) -> None:
        self.tenant = tenant
        self.name = name
        self._threads = threads
        self._cache = threads.cache
        self._vectors = vectors
        self._id: int | None = None  # bound on the first call that finds the name

    async def get(self) -> Collection | None:
        return await self._threads.read(self.tenant, self._select)

    async def delete(self) -> bool:
        return await self._threads.write(self.tenant, self._delete)

    async def text_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        return await self._read(local_docs.text_hashes, ids) or {}

    async def upsert(self, items: Sequence[Upsert], limits: Limits | None = None) -> None:
        await self._threads.write(self.tenant, self._upsert, items, limits)

    async def get_document(self, doc_id: str) -> Document | None:
        return await self._read(local_docs.get_document, doc_id)

    async def get_vector(self, doc_id: str) -> Vector | None:
        return await self._read(local_docs.get_vector, doc_id)

    async def list_documents(self, *, after: str | None, limit: int) -> list[Document]:
        return await self._read(local_docs.list_documents, after, limit) or []

    async def export_documents(self, *, after: str | None, limit: int) -> list[Upsert]:
        return await self._read(local_docs.export_documents, after, limit) or []

    async def delete_document(self, doc_id: str) -> bool:
        return await self._threads.write(self.tenant, self._delete_document, doc_id)

    async def search_vector(
        self, query: Vector, *, top_k: int, filter: Filter | None, min_score: float | None
    ) -> list[Hit]:
        search = functools.partial(self._search_vector, query=query, top_k=top_k, flt=filter,
                                   min_score=min_score)  # fmt: skip
        return await self._threads.call(self.tenant, search)

    async def search_keyword(self, query: str, *, top_k: int, filter: Filter | None) -> list[Hit]:
        return await self._read(local_docs.keyword_search, query, top_k, filter) or []

    # -- in worker threads, under the tenant's lock ------------------------------------

    def _lookup(self) -> tuple[local_db.Lookup, str | int]:
        return ("name", self.name) if self._id is None else ("id", self._id)

    def _bind(self, collection_id: int) -> None:
        if self._id is None:
            self._id = collection_id

    def _key(self, conn: sqlite3.Connection) -> Key | None:
        """The collection's ``(id, dimensions, version)``, binding the handle to it."""
        key = local_db.collection_key(conn, *self._lookup())
        if key is not None:
            self._bind(key[0])
        return key

    def _collection_id(self, conn: sqlite3.Connection) -> int | None:
        """The bound id without a query, or the name looked up (and bound)."""
        if self._id is not None:
            return self._id
        key = self._key(conn)
        return None if key is None else key[0]

    def _select(self, conn: sqlite3.Connection) -> Collection | None:
        found = local_db.select_collection(conn, *self._lookup())
        if found is None:
            return None
        self._bind(found[0])
        return found[1]

    async def _read(self, query: Callable[..., T], *args: Any) -> T | None:
        """``query(conn, collection_id, *args)``, or None without the collection."""

        def body(conn: sqlite3.Connection) -> T | None:
            collection_id = self._collection_id(conn)
            return None if collection_id is None else query(conn, collection_id, *args)

        return await self._threads.read(self.tenant, body)

    def _delete(self, tenant: Tenant) -> bool:
        conn = self._cache.connection(tenant, create=False)
        key = None if conn is None else self._key(conn)
        if conn is None or key is None:
            return False
        with transaction(conn):
            local_db.delete_collection_rows(conn, key[0])
        self._cache.drop_index(tenant, key[0])
        local_index_files.remove(tenant.directory, key[0])
        local_db.purge(conn)
        return True

    def _upsert(self, tenant: Tenant, items: Sequence[Upsert], limits: Limits | None) -> None:
        conn = self._cache.connection(tenant, create=False)
        if conn is None:
            raise LookupError("no such collection")
        with transaction(conn):
            key = self._key(conn)
            if key is None:
                raise LookupError("no such collection")
            changes = local_docs.write_documents(conn, key, items)
            local_usage.check(conn, limits)
        self._vectors.apply(tenant, key, changes)

    def _delete_document(self, tenant: Tenant, doc_id: str) -> bool:
        conn = self._cache.connection(tenant, create=False)
        if conn is None:
            return False
        with transaction(conn):
            key = self._key(conn)
            change = None if key is None else local_docs.delete_document(conn, key, doc_id)
        if key is None or change is None:
            return False
        self._vectors.apply(tenant, key, [change])
        return True

    def _search_vector(
        self, tenant: Tenant, *, query: Vector, top_k: int, flt: Filter | None,
        min_score: float | None,
    ) -> list[Hit]:  # fmt: skip
        conn = self._cache.connection(tenant, create=False)
        key = None if conn is None else self._key(conn)
        if conn is None or key is None:
            return []
        scored = self._vectors.search(tenant, conn, key, query, top_k, flt)
        if min_score is not None:
            scored = [(label, score) for label, score in scored if score >= min_score]
        return local_docs.hits(conn, scored)
