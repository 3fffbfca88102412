"""The writing half of an import: a checked file's lines into the stores, in batches."""

from __future__ import annotations

from collections.abc import Callable

from embedgate.backup.format import (
    BackupError,
    CollectionLine,
    DocumentLine,
    Header,
    KeyLine,
    Line,
    UsageLine,
    decode_vector,
)
from embedgate.backup.io import PAGE, USAGE_PAGE
from embedgate.docstore.base import (
    Collection,
    CollectionExists,
    CollectionHandle,
    Document,
    DocumentStore,
    Upsert,
)
from embedgate.storage.base import StateStore
from embedgate.storage.records import ApiKey, Conflict, UsageRecord


class Restorer:
    """Writes one tenant's lines (the tenant itself exists already). Documents go in
    batches of ``PAGE``, each committed; ``on_documents`` hears how many were written.
    ``keys=False`` (an untrusted file) leaves the key lines out."""

    def __init__(self, state: StateStore, documents: DocumentStore, tenant: str, uid: str,
                 on_documents: Callable[[int], None], *, keys: bool = True) -> None:  # fmt: skip
        self._state, self._documents, self._tenant = state, documents, tenant
        self._uid = uid  # the new incarnation's: documents and usage are keyed by it
        self._on_documents = on_documents
        self._keys = keys
        self._collection: CollectionLine | None = None
        self._handle: CollectionHandle | None = None  # the collection it just created
        self._batch: list[Upsert] = []
        self._usage: list[UsageRecord] = []

    async def take(self, line: Header | Line) -> None:
        if isinstance(line, DocumentLine):
            self._batch.append(self._upsert(line))
            if len(self._batch) >= PAGE:
                await self._write_documents()
        elif isinstance(line, UsageLine):
            values = line.model_dump(exclude={"type"})
            self._usage.append(UsageRecord(tenant_id=self._tenant, tenant_uid=self._uid,
                                           **values))  # fmt: skip
            if len(self._usage) >= USAGE_PAGE:
                await self._write_usage()
        elif isinstance(line, CollectionLine):
            await self._write_documents()
            await self._create(line)
        elif isinstance(line, KeyLine) and self._keys:
            await self._add_key(line)

    async def finish(self) -> None:
        await self._write_documents()
        await self._write_usage()

    def _upsert(self, line: DocumentLine) -> Upsert:
        assert self._collection is not None  # read_backup checks the order
        vector = decode_vector(line.vector, self._collection.dimensions)
        return Upsert(Document(line.id, line.text, line.metadata), line.text_hash, vector)

    async def _write_documents(self) -> None:
        if self._batch and self._handle is not None:
            await self._handle.upsert(self._batch)
            self._on_documents(len(self._batch))
        self._batch = []

    async def _write_usage(self) -> None:
        if self._usage:
            await self._state.usage.add(self._usage)
        self._usage = []

    async def _create(self, line: CollectionLine) -> None:
        collection = Collection(line.name, line.model, line.dimensions, line.metadata,
                                line.created_at)  # fmt: skip
        try:
            await self._documents.create_collection(self._uid, collection)
        except CollectionExists:
            raise BackupError(f"collection {line.name!r} was created meanwhile") from None
        self._collection = line
        self._handle = self._documents.collection(self._uid, line.name)
        await self._handle.get()  # tied to the collection just made, not to a later namesake

    async def _add_key(self, line: KeyLine) -> None:
        values = line.model_dump(exclude={"type", "digest"})
        key = ApiKey(tenant_id=self._tenant, **{**values, "scopes": tuple(line.scopes)})
        try:
            await self._state.keys.add(key, line.digest)
        except Conflict:
            raise BackupError(f"key {line.id} could not be stored: this server already has a "
                              "key with its id or digest") from None  # fmt: skip
