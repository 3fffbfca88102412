"""The document store interface: per-tenant collections of documents with their vectors.

Every call names its tenant by its uid (``Tenant.uid``, never reused: a re-created tenant
id is a new, empty tenant here); a store never returns, counts or changes another tenant's
data, and an unknown collection is ``None``/``False``, whoever owns a collection of that
name. Once ``delete_tenant`` has begun, every write of that uid fails with
``TenantDeleted``, in every process that shares the store. Two implementations: ``local``
(a directory per tenant under the data dir: SQLite, FTS5 and ANN index files) and
``pgvector`` (PostgreSQL, isolation by row-level security). Whole-tenant calls are the
store's; a collection's go through its handle, ``store.collection(tenant, name)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from embedgate.errors import EmbedgateError

Vector = npt.NDArray[np.float32]  # one unit-length row
# Metadata filter: {"field": value} (equality) or {"field": {"$in": [v1, v2]}}, all must hold.
# Values are JSON scalars (str, int, float, bool, None); fields are top-level metadata keys.
Filter = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Collection:
    name: str
    model: str
    dimensions: int
    metadata: dict[str, Any]
    created_at: datetime
    document_count: int = 0  # filled by get/list


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Upsert:
    """One document to write. ``vector`` is None when the stored text is unchanged
    (same ``text_hash``): only the metadata is replaced, the stored vector is kept."""

    document: Document
    text_hash: str  # sha256 hex of the text as embedded
    vector: Vector | None


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    text: str
    score: float
    metadata: dict[str, Any]


class CollectionExists(Exception):
    """A collection of that name already exists for this tenant."""


@dataclass(frozen=True, slots=True)
class Usage:
    """What a tenant stores. ``stored_bytes`` is approximate: per document the UTF-8 bytes
    of its text and of its metadata as stored (JSON), plus 4 bytes per dimension of its
    vector; plus each collection's metadata. Indexes and database overhead are not counted."""

    collections: int = 0
    documents: int = 0
    stored_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on a tenant's ``Usage`` (None: no cap), checked by a write inside its own
    transaction, so that a write that would cross one is rolled back whole."""

    collections: int | None = None
    documents: int | None = None
    stored_bytes: int | None = None

    def crossed(self, usage: Usage) -> str | None:
        """The first ``Usage`` field over its cap, or None."""
        for name in ("collections", "documents", "stored_bytes"):
            cap = getattr(self, name)
            if cap is not None and getattr(usage, name) > cap:
                return name
        return None


class LimitExceeded(Exception):
    """A write would take the tenant past a cap; nothing of it was written."""

    def __init__(self, field: str, limit: int, usage: Usage) -> None:
        super().__init__(f"{field} limit {limit}")
        self.field = field  # a Usage field
        self.limit = limit
        self.usage = usage  # as it would have been after the write


def capping(limits: Limits | None) -> Limits | None:
    """``limits`` if they cap anything, else None: a write without caps checks nothing."""
    return None if limits is None or limits == Limits() else limits


def check_limits(limits: Limits | None, usage: Usage) -> None:
    crossed = None if limits is None else limits.crossed(usage)
    if limits is not None and crossed is not None:
        raise LimitExceeded(crossed, getattr(limits, crossed), usage)


class TenantDeleted(EmbedgateError):
    """A write of a tenant that was deleted (its key may still be cached by a replica for
    a moment): refused inside the write, nothing written. Answered as its key would be
    from now on: 401 ``invalid_api_key``."""

    def __init__(self) -> None:
        super().__init__(401, "Invalid API key: this tenant has been deleted.",
                         code="invalid_api_key", type="invalid_request_error")  # fmt: skip


class CollectionHandle(Protocol):
    """One tenant's collection, named: what ``DocumentStore.collection(tenant, name)`` gives.

    Making a handle does no I/O. It names ``(tenant, name)`` until one of its calls finds a
    collection of that name; from then on it is bound to that collection, by the store's id
    for it (never reused, not even for a re-created name), for as long as it lives. So a
    handle resolves the name once, and a collection deleted and re-created under the same
    name is another collection to a handle bound before: it reads nothing of the new one
    (``None``, ``False``, ``[]``), its ``delete`` leaves it alone and its ``upsert`` raises
    ``LookupError``, as for a missing collection; a handle made afterwards sees the new one.
    A handle only ever reads or writes its tenant's data: tenant B's handle of ``docs``
    never sees A's ``docs``. Every call still makes the store's checks: a write of a deleted
    tenant raises ``TenantDeleted``, a capped write checks its ``Limits`` in its own
    transaction. Handles are cheap: make one per request or unit of work.
    """

    @property
    def tenant(self) -> str: ...

    @property
    def name(self) -> str: ...

    async def get(self) -> Collection | None: ...

    async def delete(self) -> bool:
        """Deletes the collection with its documents; False if there is none."""
        ...

    # documents; every write is committed (durable) when the call returns
    async def text_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        """id -> stored text_hash, for the ids that exist."""
        ...

    async def upsert(self, items: Sequence[Upsert], limits: Limits | None = None) -> None:
        """Raises ``LookupError`` if there is no such collection, ``LimitExceeded`` (and
        writes nothing) if it would cross ``limits``."""
        ...

    async def get_document(self, doc_id: str) -> Document | None: ...

    async def get_vector(self, doc_id: str) -> Vector | None: ...

    async def list_documents(self, *, after: str | None, limit: int) -> list[Document]:
        """In id order, ids greater than ``after``; ``limit`` + 1 rows tell has_more."""
        ...

    async def export_documents(self, *, after: str | None, limit: int) -> list[Upsert]:
        """Documents as stored, for a backup: in id order, ids greater than ``after``, at
        most ``limit``, each with its text hash and vector, so that ``upsert`` of the same
        items restores them without embedding anything."""
        ...

    async def delete_document(self, doc_id: str) -> bool: ...

    # search: results sorted by score, best first
    async def search_vector(
        self, query: Vector, *, top_k: int, filter: Filter | None, min_score: float | None
    ) -> list[Hit]:
        """Cosine similarity (inner product of unit vectors)."""
        ...

    async def search_keyword(self, query: str, *, top_k: int, filter: Filter | None) -> list[Hit]:
        """Full-text relevance (BM25 or the database's equivalent); higher is better."""
        ...


class DocumentStore(Protocol):
    backend: str  # "local" or "pgvector"

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...

    # collections
    async def create_collection(
        self, tenant: str, collection: Collection, limits: Limits | None = None
    ) -> None:
        """Raises ``LimitExceeded`` (and creates nothing) if it would cross ``limits``."""
        ...

    async def list_collections(self, tenant: str) -> list[Collection]: ...

    def collection(self, tenant: str, name: str) -> CollectionHandle:
        """A handle of the tenant's collection ``name`` (which may not exist); no I/O."""
        ...

    # whole tenant
    async def tenant_usage(self, tenant: str) -> Usage:
        """The tenant's collections, documents and stored bytes, all collections together."""
        ...

    async def delete_tenant(self, tenant: str) -> None:
        """Refuse the uid's writes from now on (waiting for those in flight), then remove
        its data. Idempotent; a uid is never written again once this has begun."""
        ...

    async def sweep(self, live: set[str]) -> int:
        """At start: remove what a crash left of deleted tenants; how many tenants' data
        went. ``live``: the uids of the tenants that exist. The embedded store (one process)
        removes every tenant's data not in it; a shared store never trusts that list
        (another replica may have just created a tenant) and removes only the data of
        tenants whose deletion had begun."""
        ...


SearchMode = Literal["vector", "keyword", "hybrid"]
