"""/v1/collections: a tenant's knowledge bases, their documents, and search over them."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Query, Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

from embedgate.api.deps import with_scope
from embedgate.errors import EmbedgateError
from embedgate.search.base import Collection, Document, Hit
from embedgate.search.service import MAX_TOP_K, SearchService, check_name
from embedgate.services.auth import Caller

router = APIRouter(prefix="/v1/collections", tags=["collections"])
MAX_DOCUMENTS = 2048
Scalar = StrictStr | StrictInt | StrictFloat | bool | None


Reader = Annotated[Caller, Depends(with_scope("search:read"))]
Writer = Annotated[Caller, Depends(with_scope("search:write"))]


async def get_search(request: Request) -> SearchService:
    service: SearchService = request.app.state.runtime.search
    return service


SearchDep = Annotated[SearchService, Depends(get_search)]


def _no_nul(value: Any) -> Any:
    """NUL characters are refused in stored text and metadata: PostgreSQL cannot store them,
    and no real document needs them."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key)
            _no_nul(item)
    if isinstance(value, list):
        for item in value:
            _no_nul(item)
    return value


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    model: StrictStr | None = None
    dimensions: StrictInt | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    _checked = field_validator("metadata")(_no_nul)


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StrictStr | None = None
    text: StrictStr = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)

    _checked = field_validator("text", "metadata")(_no_nul)


class DocumentsUpsert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_DOCUMENTS)


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: StrictStr = Field(min_length=1)
    top_k: StrictInt = Field(default=5, ge=1, le=MAX_TOP_K)
    filter: dict[str, Scalar | dict[Literal["$in"], list[Scalar]]] | None = None
    min_score: StrictFloat | StrictInt | None = None
    mode: Literal["vector", "keyword", "hybrid"] = "vector"
    instruction: StrictStr | None = None

    _checked = field_validator("query", "filter")(_no_nul)

    @field_validator("filter")
    @classmethod
    def _in_is_not_empty(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for key, condition in (value or {}).items():
            if isinstance(condition, dict) and not condition.get("$in"):
                raise ValueError(f"filter.{key}: `$in` needs a non-empty list")
        return value


def collection_json(collection: Collection) -> dict[str, Any]:
    return {
        "name": collection.name, "object": "collection", "model": collection.model,
        "dimensions": collection.dimensions, "document_count": collection.document_count,
        "metadata": collection.metadata, "created_at": int(collection.created_at.timestamp()),
    }  # fmt: skip


def document_json(document: Document) -> dict[str, Any]:
    return {"id": document.id, "object": "document", "text": document.text,
            "metadata": document.metadata}  # fmt: skip


def hit_json(hit: Hit) -> dict[str, Any]:
    return {"id": hit.id, "text": hit.text, "score": hit.score, "metadata": hit.metadata}


def _rate_headers(request: Request, rate: dict[str, str]) -> None:
    """The admission's x-ratelimit-* headers, when the request embedded something; without
    them, the response gets the tenant's current state (api/middleware.py)."""
    if rate:
        request.state.ratelimit = rate


def _meter(request: Request, model: str, inputs: int, tokens: int, dimensions: int) -> None:
    request.state.usage = {"model": model, "inputs": inputs, "tokens": tokens,
                           "dimensions": dimensions}  # fmt: skip


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
async def get_collection(name: str, caller: Reader, search: SearchDep) -> Any:
    return collection_json(await search.collection(caller, name))


@router.delete("/{name}")
async def delete_collection(name: str, caller: Writer, search: SearchDep) -> Any:
    await search.delete_collection(caller, name)
    return {"name": name, "object": "collection", "deleted": True}


@router.post("/{name}/documents")
async def upsert_documents(
    name: str, body: DocumentsUpsert, caller: Writer, search: SearchDep, request: Request
) -> Any:
    """Add or replace documents; only new or changed texts are embedded."""
    documents = [d.model_dump() for d in body.documents]
    rate: dict[str, str] = {}
    written = await search.upsert(caller, name, documents, rate)
    _rate_headers(request, rate)
    collection = written.collection
    embedded = sum(status != "unchanged" for status in written.statuses)
    _meter(request, collection.model, embedded, written.prompt_tokens, collection.dimensions)
    data = [{"id": i, "object": "document", "status": s}
            for i, s in zip(written.ids, written.statuses, strict=True)]  # fmt: skip
    usage = {"prompt_tokens": written.prompt_tokens, "total_tokens": written.prompt_tokens}
    return {"object": "list", "data": data, "usage": usage}


@router.get("/{name}/documents")
async def list_documents(
    name: str, caller: Reader, search: SearchDep,
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
    name: str, doc_id: str, caller: Reader, search: SearchDep, include_vector: bool = False
) -> Any:
    """A document; with ``include_vector=true`` also its stored embedding."""
    body = document_json(await search.document(caller, name, doc_id))
    if include_vector:
        body["embedding"] = [float(v) for v in await search.vector(caller, name, doc_id)]
    return body


@router.delete("/{name}/documents/{doc_id:path}")
async def delete_document(name: str, doc_id: str, caller: Writer, search: SearchDep) -> Any:
    await search.delete_document(caller, name, doc_id)
    return {"id": doc_id, "object": "document", "deleted": True}


@router.post("/{name}/search")
async def search_collection(
    name: str, body: SearchRequest, caller: Reader, search: SearchDep, request: Request
) -> Any:
    rate: dict[str, str] = {}
    found = await search.search(
        caller, name, body.query, top_k=body.top_k, mode=body.mode, filter=body.filter,
        min_score=body.min_score, instruction=body.instruction, rate_headers=rate,
    )  # fmt: skip
    _rate_headers(request, rate)
    inputs = 0 if body.mode == "keyword" else 1
    collection = found.collection
    _meter(request, collection.model, inputs, found.prompt_tokens, collection.dimensions)
    usage = {"prompt_tokens": found.prompt_tokens, "total_tokens": found.prompt_tokens}
    return {"object": "list", "data": [hit_json(h) for h in found.hits], "usage": usage}


@router.api_route("/{rest:path}", methods=["GET", "POST", "DELETE"], include_in_schema=False)
async def no_such_route(rest: str, request: Request) -> Any:
    """Paths no route matched: a collection name holding '/', '..' or control characters
    (encoded or not) is a bad request, anything else an unknown path."""
    raw = request.scope.get("raw_path", b"").decode("latin-1")
    first = raw.split("/v1/collections/", 1)[-1].split("/", 1)[0]
    check_name(unquote(first))
    raise EmbedgateError(404, "Not found.", code="not_found")
