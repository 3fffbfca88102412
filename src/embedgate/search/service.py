"""Collections and search for a tenant: validation, embedding, and fusion over a store.

Documents are embedded as documents (no instruction), queries as queries (the request's
instruction, else the model's default), both through ``EmbeddingService``: the tenant's
policy, rate limits, quota, fair scheduling and metering apply exactly as on
/v1/embeddings. A collection of another tenant does not exist: 404, never 403. A search
with a rerank stage retrieves more candidates and reranks them (search/two_stage.py).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from embedgate.docstore import caps as caps
from embedgate.docstore.base import (
    Collection,
    CollectionExists,
    CollectionHandle,
    Document,
    Filter,
    Hit,
    LimitExceeded,
    SearchMode,
    Upsert,
    Usage,
)
from embedgate.embeddings.service import EmbeddingJob, EmbeddingService
from embedgate.engine.registry import ModelRegistry
from embedgate.errors import EmbedgateError, invalid_request
from embedgate.search.two_stage import Reranked, RerankStage, TwoStage
from embedgate.tenancy.auth import Caller
from embedgate.tenancy.policy import check_model, check_texts, denied

if TYPE_CHECKING:
    from embedgate.docstore.stores import StoreHolder

log = logging.getLogger("embedgate.search")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_ID_CHARS = 256
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al., 2009)
HYBRID_DEPTH = 50  # each ranking contributes at least this many candidates to fusion
MAX_TOP_K = 1000


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise invalid_request(
            "Invalid collection name: use 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
            "name",
        )
    return name


def check_id(doc_id: str, param: str = "id") -> str:
    if not doc_id or len(doc_id) > MAX_ID_CHARS or any(ord(c) < 32 for c in doc_id):
        raise invalid_request(
            f"Invalid document id: 1 to {MAX_ID_CHARS} characters, no control characters.",
            param,
        )
    return doc_id


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def collection_not_found(name: str) -> EmbedgateError:
    return EmbedgateError(404, f"No collection named `{name}`.", code="not_found", param="name")


def document_not_found(doc_id: str) -> EmbedgateError:
    return EmbedgateError(404, "No document with this id in the collection.", code="not_found",
                          param="id")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Written:
    collection: Collection
    ids: list[str]
    statuses: list[str]  # "created", "updated" or "unchanged"
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Found:
    collection: Collection
    hits: list[Hit]
    prompt_tokens: int
    reranked: Reranked | None = None  # with a rerank stage: its scores, one per hit


class SearchService:
    def __init__(
        self, stores: StoreHolder, embeddings: EmbeddingService, registry: ModelRegistry,
        clock: Any, two_stage: TwoStage,
    ) -> None:  # fmt: skip
        self._stores = stores
        self._embeddings = embeddings
        self._registry = registry
        self._clock = clock
        self._two_stage = two_stage

    async def create_collection(
        self, caller: Caller, name: str, *, model: str | None, dimensions: int | None,
        metadata: dict[str, Any],
    ) -> Collection:  # fmt: skip
        store = await self._stores.get()
        check_name(name)
        served = self._registry.resolve_for(caller.tenant.id, model)
        if served.task != "embed":  # a collection's vectors come from an embedding model
            raise invalid_request(f"The model `{served.name}` is a rerank model; a collection "
                                  "needs an embedding model.", "model",
                                  code="wrong_model_task")  # fmt: skip
        check_model(caller.policy, served.name)
        dims = dimensions if dimensions is not None else served.dimensions
        low, high = served.spec.min_dimensions, served.dimensions
        if not low <= dims <= high:
            raise invalid_request(f"`dimensions` must be between {low} and {high} for model "
                                  f"`{served.name}`, got {dims}.", "dimensions")  # fmt: skip
        limit = caller.policy.max_dimensions
        if limit is not None and dims > limit:
            raise denied(
                f"Your plan allows at most {limit} dimensions; ask for fewer with `dimensions`.",
                code="dimension_limit_exceeded", param="dimensions",
            )  # fmt: skip
        collection = Collection(name, served.name, dims, metadata, self._now())
        caps.check_collection_metadata(caller.policy, metadata)
        limits = caps.limits(caller.policy)
        await caps.precheck_collection(store, caller.tenant.uid, limits, metadata)
        try:
            await store.create_collection(caller.tenant.uid, collection, limits)
        except CollectionExists:
            raise EmbedgateError(409, f"A collection named `{name}` already exists.",
                                 code="collection_exists", param="name") from None  # fmt: skip
        except LimitExceeded as exc:
            raise await caps.refused(store, caller.tenant.uid, exc) from None
        return collection

    async def storage_usage(self, caller: Caller) -> Usage | None:
        """What the tenant stores, or None while the document store is unavailable: /v1/me
        answers without it, as it did before collections existed."""
        try:
            store = await self._stores.get()
            return await store.tenant_usage(caller.tenant.uid)
        except Exception as exc:  # store down or restarting: the rest of /v1/me still holds
            log.warning("storage usage unavailable: %s", type(exc).__name__)
            return None

    async def collection(self, caller: Caller, name: str) -> Collection:
        return (await self._open(caller, name))[1]

    async def _open(self, caller: Caller, name: str) -> tuple[CollectionHandle, Collection]:
        """The tenant's collection, its name looked up once: the rest of the request
        reaches it through the handle, bound to it (a collection re-created under the
        name meanwhile is another one, never written by this request)."""
        store = await self._stores.get()
        check_name(name)
        handle = store.collection(caller.tenant.uid, name)
        found = await handle.get()
        if found is None:
            raise collection_not_found(name)
        return handle, found

    async def collections(self, caller: Caller) -> list[Collection]:
        store = await self._stores.get()
        return await store.list_collections(caller.tenant.uid)

    async def delete_collection(self, caller: Caller, name: str) -> None:
        store = await self._stores.get()
        check_name(name)
        if not await store.collection(caller.tenant.uid, name).delete():
            raise collection_not_found(name)

    async def upsert(
        self, caller: Caller, name: str, documents: Sequence[Document | dict[str, Any]],
        rate_headers: dict[str, str] | None = None,
    ) -> Written:  # fmt: skip
        """Write documents; only new or changed texts are embedded. Committed on return.
        ``rate_headers`` receives the x-ratelimit-* headers when something is embedded."""
        store = await self._stores.get()
        handle, collection = await self._open(caller, name)
        docs = [_document(d, i) for i, d in enumerate(documents)]
        ids = [d.id for d in docs]
        if len(set(ids)) != len(ids):
            raise invalid_request("Document ids must be unique within a request.", "documents")
        caps.check_document_metadata(caller.policy, docs)
        # Every text, not only those to embed: an unchanged one is written again too.
        check_texts(caller.policy, [d.text for d in docs])
        tenant = caller.tenant.uid  # the store keys everything by the tenant's uid
        stored = await handle.text_hashes(ids)
        limits = caps.limits(caller.policy)
        await caps.precheck_upsert(store, tenant, limits, docs, stored, collection.dimensions)
        hashes = [text_hash(d.text) for d in docs]
        changed = [i for i, (d, h) in enumerate(zip(docs, hashes, strict=True))
                   if stored.get(d.id) != h]  # fmt: skip
        vectors: dict[int, Any] = {}
        tokens = 0
        if changed:
            job = EmbeddingJob(model=collection.model, texts=[docs[i].text for i in changed],
                               dimensions=collection.dimensions)  # fmt: skip
            result = await self._embeddings.embed(caller, job, rate_headers)
            vectors = dict(zip(changed, result.vectors, strict=True))
            tokens = result.prompt_tokens
        pairs = enumerate(zip(docs, hashes, strict=True))
        items = [Upsert(doc, digest, vectors.get(i)) for i, (doc, digest) in pairs]
        try:
            await handle.upsert(items, limits)
        except LimitExceeded as exc:  # crossed by replaced documents or a concurrent write
            raise await caps.refused(store, tenant, exc) from None
        except LookupError:  # the collection was deleted meanwhile (perhaps re-created)
            raise collection_not_found(name) from None
        except ValueError:  # a text changed by a concurrent write since it was compared
            raise EmbedgateError(409, "The documents changed while they were written; retry.",
                                 code="conflict") from None  # fmt: skip
        statuses = [
            "unchanged" if i not in vectors else "updated" if d.id in stored else "created"
            for i, d in enumerate(docs)
        ]
        return Written(collection, ids, statuses, tokens)

    async def document(self, caller: Caller, name: str, doc_id: str) -> Document:
        handle, _ = await self._open(caller, name)
        found = await handle.get_document(check_id(doc_id))
        if found is None:
            raise document_not_found(doc_id)
        return found

    async def vector(self, caller: Caller, name: str, doc_id: str) -> Any:
        handle, _ = await self._open(caller, name)
        found = await handle.get_vector(check_id(doc_id))
        if found is None:
            raise document_not_found(doc_id)
        return found

    async def documents(
        self, caller: Caller, name: str, *, after: str | None, limit: int
    ) -> tuple[list[Document], bool]:
        handle, _ = await self._open(caller, name)
        rows = await handle.list_documents(after=after, limit=limit)
        return rows[:limit], len(rows) > limit

    async def delete_document(self, caller: Caller, name: str, doc_id: str) -> None:
        handle, _ = await self._open(caller, name)
        if not await handle.delete_document(check_id(doc_id)):
            raise document_not_found(doc_id)

    async def search(
        self, caller: Caller, name: str, query: str, *, top_k: int, mode: SearchMode,
        filter: Filter | None, min_score: float | None, instruction: str | None,
        rate_headers: dict[str, str] | None = None, rerank: RerankStage | None = None,
    ) -> Found:  # fmt: skip
        """``rate_headers`` receives the x-ratelimit-* headers when the query is embedded or
        reranked. With ``rerank``, the mode retrieves the stage's candidates and the rerank
        model keeps the best ``top_k`` of them."""
        planned = None if rerank is None else self._two_stage.plan(caller, rerank, top_k)
        handle, collection = await self._open(caller, name)
        check_texts(caller.policy, [query])  # keyword searches embed nothing
        depth = top_k if planned is None else planned.candidates
        try:
            found = await self._search(handle, caller, collection, query, top_k=depth,
                                       mode=mode, filter=filter, min_score=min_score,
                                       instruction=instruction,
                                       rate_headers=rate_headers)  # fmt: skip
        except ValueError as exc:  # a filter the store cannot evaluate
            raise invalid_request(f"Invalid filter: {exc}", "filter") from None
        if planned is None:
            return found
        hits, reranked = await self._two_stage.rerank(caller, planned, query, found.hits, top_k,
                                                      rate_headers)  # fmt: skip
        return Found(collection, hits, found.prompt_tokens, reranked)

    async def _search(
        self, handle: CollectionHandle, caller: Caller, collection: Collection, query: str, *,
        top_k: int, mode: SearchMode, filter: Filter | None, min_score: float | None,
        instruction: str | None, rate_headers: dict[str, str] | None,
    ) -> Found:  # fmt: skip
        if mode == "keyword":
            hits = await handle.search_keyword(query, top_k=top_k, filter=filter)
            return Found(collection, hits, 0)
        vector, tokens = await self._embed_query(caller, collection, query, instruction,
                                                 rate_headers)  # fmt: skip
        depth = top_k if mode == "vector" else max(top_k, HYBRID_DEPTH)
        by_vector = await handle.search_vector(vector, top_k=depth, filter=filter,
                                               min_score=min_score)  # fmt: skip
        if mode == "vector":
            return Found(collection, by_vector, tokens)
        by_keyword = await handle.search_keyword(query, top_k=depth, filter=filter)
        return Found(collection, fuse([by_vector, by_keyword])[:top_k], tokens)

    async def _embed_query(
        self, caller: Caller, collection: Collection, query: str, instruction: str | None,
        rate_headers: dict[str, str] | None,
    ) -> tuple[Any, int]:  # fmt: skip
        served = self._registry.resolve_for(caller.tenant.id, collection.model)
        default = served.default_instruction if served.supports_instructions else None
        job = EmbeddingJob(
            model=collection.model, texts=[query], dimensions=collection.dimensions,
            instruction=instruction if instruction is not None else default,
            instruction_is_default=instruction is None,
        )  # fmt: skip
        result = await self._embeddings.embed(caller, job, rate_headers)
        return result.vectors[0], result.prompt_tokens

    def _now(self) -> datetime:
        now: datetime = self._clock()
        return now


def fuse(rankings: Sequence[Sequence[Hit]]) -> list[Hit]:
    """Reciprocal rank fusion: each list gives 1 / (RRF_K + rank); the sum is the score."""
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (RRF_K + rank)
            first.setdefault(hit.id, hit)
    order = sorted(scores, key=lambda doc_id: (-scores[doc_id], doc_id))
    return [Hit(i, first[i].text, scores[i], first[i].metadata) for i in order]


def _document(value: Document | dict[str, Any], index: int) -> Document:
    if isinstance(value, Document):
        return Document(check_id(value.id, f"documents[{index}].id"), value.text, value.metadata)
    doc_id = value.get("id")
    if doc_id is None:
        doc_id = f"doc_{secrets.token_hex(12)}"
    return Document(check_id(doc_id, f"documents[{index}].id"), value["text"],
                    value.get("metadata") or {})  # fmt: skip
