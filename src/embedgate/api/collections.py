"""/v1/collections: a tenant's knowledge bases, their documents, and search over them."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Path, Query, Request

from embedgate.api.admission import AdmittedRoute
from embedgate.api.deps import ContextDep, with_scope
from embedgate.api.routing import StrictJsonRoute
from embedgate.api.schemas.collections import CollectionCreate, DocumentsUpsert, SearchRequest
from embedgate.docstore.base import Collection, Document, Hit
from embedgate.errors import EmbedgateError
from embedgate.search.service import MAX_ID_CHARS, NAME, Found, SearchService, check_name
from embedgate.search.two_stage import RerankStage
from embedgate.tenancy.auth import Caller


class CollectionRoute(AdmittedRoute, StrictJsonRoute):
    """Admitted first (api/admission.py), then the body is read and checked strictly."""

    checks_path = False  # the search service checks names and ids (400, param name or id)


router = APIRouter(prefix="/v1/collections", tags=["collections"], route_class=CollectionRoute)

# Documented in the OpenAPI schema only: the service checks names and ids itself (400).
Name = Annotated[str, Path(json_schema_extra={"pattern": f"^{NAME.pattern}$"})]
DocId = Annotated[str, Path(json_schema_extra={"minLength": 1, "maxLength": MAX_ID_CHARS})]
Reader = Annotated[Caller, Depends(with_scope("search:read"))]
Writer = Annotated[Caller, Depends(with_scope("search:write"))]


async def get_search(request: Request) -> SearchService:
    service: SearchService = request.app.state.runtime.search
    return service


SearchDep = Annotated[SearchService, Depends(get_search)]


def collection_json(collection: Collection) -> dict[str, Any]:
    return {
        "name": collection.name, "object": "collection", "model": collection.model,
        "dimensions": collection.dimensions, "document_count": collection.document_count,
        "metadata": collection.metadata, "created_at": int(collection.created_at.timestamp()),
    }  # fmt: skip


def document_json(document: Document) -> dict[str, Any]:
    return {"id": document.id, "object": "document", "text": document.text,
            "metadata": document.metadata}  # fmt: skip


def hit_json(hit: Hit, rerank_score: float | None = None) -> dict[str, Any]:
    body = {"id": hit.id, "text": hit.text, "score": hit.score, "metadata": hit.metadata}
    if rerank_score is not None:
        body["rerank_score"] = rerank_score
    return body


def found_json(found: Found) -> dict[str, Any]:
    """The hits and usage; with a rerank stage each hit's ``rerank_score`` too, and the
    rerank tokens apart (``total_tokens`` is the query's and the rerank's together)."""
    reranked, tokens = found.reranked, found.prompt_tokens
    if reranked is None:
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "data": [hit_json(h) for h in found.hits], "usage": usage}
    usage = {"prompt_tokens": tokens, "rerank_tokens": reranked.tokens,
             "total_tokens": tokens + reranked.tokens}  # fmt: skip
    data = [hit_json(h, s) for h, s in zip(found.hits, reranked.scores, strict=True)]
    return {"object": "list", "data": data, "usage": usage}


@router.post("", status_code=201)
async def create_collection(body: CollectionCreate, caller: Writer, search: SearchDep) -> Any:
    collection = await search.create_collection(
        caller, body.name, model=body.model, dimensions=body.dimensions, metadata=body.metadata
    )
    return collection_json(collection)


@router.get("")
async def list_collections(caller: Reader, search: SearchDep) -> Any:
    collections = await search.collections(caller)
    return {"object": "list", "data": [collection_json(c) for c in collections]}


@router.get("/{name}")
async def get_collection(name: Name, caller: Reader, search: SearchDep) -> Any:
    return collection_json(await search.collection(caller, name))


@router.delete("/{name}")
async def delete_collection(name: Name, caller: Writer, search: SearchDep) -> Any:
    await search.delete_collection(caller, name)
    return {"name": name, "object": "collection", "deleted": True}


@router.post("/{name}/documents")
async def upsert_documents(
    name: Name, body: DocumentsUpsert, caller: Writer, search: SearchDep, context: ContextDep
) -> Any:
    """Add or replace documents; only new or changed texts are embedded."""
    documents = [d.model_dump() for d in body.documents]
    rate: dict[str, str] = {}  # filled when something was embedded
    written = await search.upsert(caller, name, documents, rate)
    context.rate_limit(rate)
    collection = written.collection
    embedded = sum(status != "unchanged" for status in written.statuses)
    context.meter(collection.model, embedded, written.prompt_tokens, collection.dimensions)
    data = [{"id": i, "object": "document", "status": s}
            for i, s in zip(written.ids, written.statuses, strict=True)]  # fmt: skip
    usage = {"prompt_tokens": written.prompt_tokens, "total_tokens": written.prompt_tokens}
    return {"object": "list", "data": data, "usage": usage}


@router.get("/{name}/documents")
async def list_documents(
    name: Name, caller: Reader, search: SearchDep,
    after: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:  # fmt: skip
    documents, more = await search.documents(caller, name, after=after, limit=limit)
    body: dict[str, Any] = {"object": "list", "data": [document_json(d) for d in documents],
                            "has_more": more}  # fmt: skip
    if more:
        body["next_after"] = documents[-1].id
    return body


@router.get("/{name}/documents/{doc_id:path}")
async def get_document(
    name: Name, doc_id: DocId, caller: Reader, search: SearchDep, include_vector: bool = False
) -> Any:
    """A document; with ``include_vector=true`` also its stored embedding."""
    body = document_json(await search.document(caller, name, doc_id))
    if include_vector:
        body["embedding"] = [float(v) for v in await search.vector(caller, name, doc_id)]
    return body


@router.delete("/{name}/documents/{doc_id:path}")
async def delete_document(name: Name, doc_id: DocId, caller: Writer, search: SearchDep) -> Any:
    await search.delete_document(caller, name, doc_id)
    return {"id": doc_id, "object": "document", "deleted": True}


@router.post("/{name}/search")
async def search_collection(
    name: Name, body: SearchRequest, caller: Reader, search: SearchDep, context: ContextDep
) -> Any:
    rate: dict[str, str] = {}  # filled when the query was embedded or reranked
    stage = None if body.rerank is None else RerankStage(body.rerank.model, body.rerank.candidates)
    found = await search.search(
        caller, name, body.query, top_k=body.top_k, mode=body.mode, filter=body.filter,
        min_score=body.min_score, instruction=body.instruction, rate_headers=rate,
        rerank=stage,
    )  # fmt: skip
    context.rate_limit(rate)
    inputs = 0 if body.mode == "keyword" else 1
    collection = found.collection
    context.meter(collection.model, inputs, found.prompt_tokens, collection.dimensions)
    reranked = found.reranked
    if reranked is not None and reranked.documents:  # metered apart: docs/metering.md
        context.meter_stage("rerank", reranked.model, reranked.documents, reranked.tokens)
    return found_json(found)


@router.api_route("/{rest:path}", methods=["GET", "POST", "DELETE"], include_in_schema=False)
async def no_such_route(rest: str, request: Request) -> Any:
    """Paths no route matched: a collection name holding '/', '..' or control characters
    (encoded or not) is a bad request, anything else an unknown path."""
    raw = request.scope.get("raw_path", b"").decode("latin-1")
    first = raw.split("/v1/collections/", 1)[-1].split("/", 1)[0]
    check_name(unquote(first))
    raise EmbedgateError(404, "Not found.", code="not_found")
