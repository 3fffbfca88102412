"""A collection of the pgvector store (``base.CollectionHandle``).

The handle binds to its collection's id the first time a call finds the name. After that
it reads the documents of that id directly (``tenant_id`` too, and row-level security
anyway: never another tenant's), with no lookup at all (a deleted collection's documents
went with it, ON DELETE CASCADE, in the same transaction); writes lock the collection's
row by id, and a vector search reads it by id for its dimensions and size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from psycopg.types.json import Jsonb

from embedgate.docstore.base import Collection, Document, Filter, Hit, Limits, Upsert, Vector
from embedgate.docstore.pgvector import queries as q
from embedgate.docstore.pgvector.search import Ref, hits, nearest
from embedgate.docstore.pgvector.text import query_terms
from embedgate.docstore.pgvector.transactions import (
    Connection,
    Transactions,
    check_caps,
    lock_capped,
    one,
    to_collection,
)


class PgCollection:
    def __init__(self, transactions: Transactions, tenant: str, name: str) -> None:
        self.tenant = tenant
        self.name = name
        self._tx = transactions
        self._id: int | None = None  # bound on the first call that finds the name

    async def get(self) -> Collection | None:
        async with self._tx.tenant(self.tenant) as connection:
            row = await one(connection, q.COLLECTION + self._where(), self._params())
        if row is None:
            return None
        self._bind(row[0])
        return to_collection(row[1:])

    async def delete(self) -> bool:
        statement = q.DELETE_COLLECTIONS + self._where() + q.RETURNING_ID
        async with self._tx.writer(self.tenant) as connection:
            row = await one(connection, statement, self._params())
        if row is not None:
            self._bind(row[0])
        return row is not None

    async def text_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        async with self._tx.tenant(self.tenant) as connection:
            found = await self._documents(connection, q.TEXT_HASHES, list(ids))
        return dict(found)

    async def upsert(self, items: Sequence[Upsert], limits: Limits | None = None) -> None:
        fresh = [item for item in items if item.vector is not None]
        kept = [item for item in items if item.vector is None]
        async with self._tx.writer(self.tenant) as connection:
            await lock_capped(connection, self.tenant, limits)
            ref = await self._ref(connection, lock=True)
            if ref is None:
                raise LookupError(f"no collection named {self.name!r}")
            rows = [_row(self.tenant, ref, item) for item in fresh]
            created = await _count_new(connection, ref, {item.document.id for item in fresh})
            async with connection.cursor() as cursor:
                if rows:
                    await cursor.executemany(q.UPSERT, rows)
                if kept:
                    metadata = [[Jsonb(i.document.metadata), ref.id, i.document.id] for i in kept]
                    await cursor.executemany(q.SET_METADATA, metadata)
            if created:
                await connection.execute(q.ADD_COUNT, [created, ref.id])
            await check_caps(connection, self.tenant, limits)

    async def get_document(self, doc_id: str) -> Document | None:
        async with self._tx.tenant(self.tenant) as connection:
            found = await self._documents(connection, q.DOCUMENT, doc_id)
        return Document(*found[0]) if found else None

    async def get_vector(self, doc_id: str) -> Vector | None:
        async with self._tx.tenant(self.tenant) as connection:
            found = await self._documents(connection, q.VECTOR, doc_id, binary=True)
        return found[0][0] if found else None

    async def list_documents(self, *, after: str | None, limit: int) -> list[Document]:
        # limit + 1 rows tell the caller whether there is a next page (see base.py).
        async with self._tx.tenant(self.tenant) as connection:
            found = await self._documents(connection, q.PAGE, after, after, limit + 1)
        return [Document(*row) for row in found]

    async def export_documents(self, *, after: str | None, limit: int) -> list[Upsert]:
        async with self._tx.tenant(self.tenant) as connection:
            found = await self._documents(connection, q.EXPORT, after, after, limit, binary=True)
        return [Upsert(Document(i, text, meta), digest, vector)
                for i, text, meta, digest, vector in found]  # fmt: skip

    async def delete_document(self, doc_id: str) -> bool:
        async with self._tx.writer(self.tenant) as connection:
            ref = await self._ref(connection, lock=True)
            if ref is None:
                return False
            deleted = (await connection.execute(q.DELETE_DOCUMENT, [ref.id, doc_id])).rowcount
            if deleted:
                await connection.execute(q.ADD_COUNT, [-deleted, ref.id])
        return deleted > 0

    async def search_vector(
        self, query: Vector, *, top_k: int, filter: Filter | None, min_score: float | None
    ) -> list[Hit]:
        where, params = q.metadata_filter(filter)
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        async with self._tx.tenant(self.tenant) as connection:
            ref = await self._ref(connection)
            if ref is None or vector.shape[0] != ref.dimensions:
                return []
            params |= {"query": vector, "collection": ref.id, "tenant": self.tenant,
                       "top_k": top_k}  # fmt: skip
            found = hits(await nearest(connection, ref, where, params, bool(filter)))
        return [hit for hit in found if min_score is None or hit.score >= min_score]

    async def search_keyword(self, query: str, *, top_k: int, filter: Filter | None) -> list[Hit]:
        where, params = q.metadata_filter(filter)
        async with self._tx.tenant(self.tenant) as connection:
            collection_id = await self._collection_id(connection)
            if collection_id is None:
                return []
            terms = query_terms(query)
            found = await one(connection, q.TSQUERIES, [terms]) if terms else None
            if found is None or found[0] is None:
                return []
            params |= {f"term_{n}": term for n, term in enumerate(found[1])}
            params |= {"any": found[0], "collection": collection_id, "tenant": self.tenant,
                       "top_k": top_k}  # fmt: skip
            statement = q.keyword_search(len(found[1]), where)
            cursor = await connection.execute(statement, params, prepare=False)
            return hits(await cursor.fetchall())

    # -- the collection: by name until bound, then by id ---------------------------------

    def _where(self) -> str:
        return q.BY_NAME if self._id is None else q.BY_ID

    def _params(self) -> list[Any]:
        return [self.tenant, self.name if self._id is None else self._id]

    def _bind(self, collection_id: int) -> None:
        if self._id is None:
            self._id = collection_id

    async def _ref(self, connection: Connection, *, lock: bool = False) -> Ref | None:
        statement = q.REF + self._where() + (q.FOR_UPDATE if lock else "")
        row = await one(connection, statement, self._params())
        if row is None:
            return None
        self._bind(row[0])
        return Ref(*row)

    async def _collection_id(self, connection: Connection) -> int | None:
        """The bound id without a query, or the name looked up (and bound)."""
        if self._id is not None:
            return self._id
        ref = await self._ref(connection)
        return None if ref is None else ref.id

    async def _documents(self, connection: Connection, query: str, *params: Any,
                         binary: bool = False) -> list[Any]:  # fmt: skip
        """``query`` (on ``q.IN_COLLECTION``) on the collection's documents; [] without it."""
        collection_id = await self._collection_id(connection)
        if collection_id is None:
            return []
        values = [collection_id, self.tenant, *params]
        cursor = await connection.execute(query, values, binary=binary)
        return await cursor.fetchall()


async def _count_new(connection: Connection, ref: Ref, ids: set[str]) -> int:
    existing = await one(connection, q.EXISTING, [ref.id, list(ids)]) if ids else None
    return len(ids) - (int(existing[0]) if existing is not None else 0)


def _row(tenant: str, ref: Ref, item: Upsert) -> list[Any]:
    vector = np.asarray(item.vector, dtype=np.float32).reshape(-1)
    if vector.shape[0] != ref.dimensions:
        raise ValueError(
            f"document {item.document.id!r}: {vector.shape[0]} dimensions, "
            f"the collection has {ref.dimensions}"
        )
    doc = item.document
    return [ref.id, doc.id, tenant, ref.dimensions, doc.text, item.text_hash,
            Jsonb(doc.metadata), vector]  # fmt: skip
