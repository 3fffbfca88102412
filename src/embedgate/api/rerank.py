"""POST /v1/rerank (and the /rerank, /v2/rerank aliases clients use): Cohere/Jina shapes.

Admitted, scoped and limited like /v1/embeddings (the `embeddings` scope: the same model
work, so a key that may embed may rerank); metered under its own route.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from embedgate.api.admission import EmbeddingsRoute
from embedgate.api.bodies import read_body
from embedgate.api.context import RequestContext
from embedgate.api.deps import EmbeddingsCallerDep, RerankDep
from embedgate.api.input_caps import CODE
from embedgate.api.schemas.rerank import RerankRequest, RerankResponse
from embedgate.errors import invalid_request
from embedgate.rerank.service import RerankJob, RerankResult

router = APIRouter(tags=["rerank"], route_class=EmbeddingsRoute)
PATHS = ("/v1/rerank", "/rerank", "/v2/rerank")
REQUEST_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": RerankRequest.model_json_schema()}},
    }
}


def check_chars(data: Any, cap: int) -> None:
    documents = data.get("documents") if isinstance(data, dict) else None
    if not isinstance(documents, list):
        return
    chars = sum(len(d) if isinstance(d, str) else len(str(d.get("text", "")))
                if isinstance(d, dict) else 0 for d in documents)  # fmt: skip
    if chars > cap:
        raise invalid_request(
            f"The request's documents hold {chars} characters together; this server accepts "
            f"at most {cap} per request. Send fewer or shorter documents.",
            "documents", code=CODE,
        )  # fmt: skip


def render(result: RerankResult, body: RerankRequest, request_id: str) -> bytes:
    results: list[dict[str, Any]] = []
    for ranked in result.results:
        item: dict[str, Any] = {"index": ranked.index, "relevance_score": ranked.score}
        if body.return_documents:
            item["document"] = {"text": body.documents[ranked.index]}
        results.append(item)
    return orjson.dumps({"id": request_id, "model": result.model, "results": results,
                         "usage": {"total_tokens": result.tokens}})  # fmt: skip


async def create_rerank(
    request: Request, service: RerankDep, caller: EmbeddingsCallerDep
) -> Response:
    cap = request.app.state.runtime.settings.max_request_chars
    body = await read_body(request, caller, RerankRequest, functools.partial(check_chars, cap=cap))
    job = RerankJob(model=body.model, query=body.query, documents=body.documents,
                    top_n=body.top_n, instruction=body.instruction)  # fmt: skip
    context = RequestContext.of(request)
    rate_headers = context.rate_headers or {}
    result = await service.rerank(caller, job, rate_headers)
    context.rate_limit(rate_headers)
    context.meter(result.model, len(body.documents), result.tokens, None)
    return Response(render(result, body, context.request_id), media_type="application/json")


for _path in PATHS:
    router.add_api_route(
        _path, create_rerank, methods=["POST"], response_model=RerankResponse,
        openapi_extra=REQUEST_SCHEMA, summary="Rerank documents for a query",
        operation_id=f"rerank{_path.replace('/', '_')}",
    )  # fmt: skip
