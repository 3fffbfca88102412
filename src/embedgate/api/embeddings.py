"""POST /v1/embeddings: the OpenAI contract, plus `instruction`."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from embedgate.api.admission import EmbeddingsRoute
from embedgate.api.bodies import read_body
from embedgate.api.context import RequestContext
from embedgate.api.deps import EmbeddingsCallerDep, EmbeddingsDep
from embedgate.api.input_caps import RequestCaps
from embedgate.api.schemas.embeddings import EmbeddingRequest, EmbeddingResponse
from embedgate.embeddings.service import EmbeddingJob, EmbeddingResult
from embedgate.engine.backends.base import Vectors
from embedgate.runtime import Runtime
from embedgate.tenancy.auth import Caller

router = APIRouter(prefix="/v1", tags=["embeddings"], route_class=EmbeddingsRoute)


def encode_vectors(vectors: Vectors, encoding_format: str) -> list[Any]:
    """base64 of little-endian float32, or floats that parse back to the same float32 bits.

    Floats are written as the float64 value of each float32 (e.g. 0.10000000149011612, not
    0.1), so a client parsing JSON gets bit-identical numbers to the base64 path.
    """
    if encoding_format == "base64":
        little = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    return list(vectors.astype(np.float64))


def render(result: EmbeddingResult, encoding_format: str) -> bytes:
    encoded = encode_vectors(result.vectors, encoding_format)
    body = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": emb} for i, emb in enumerate(encoded)
        ],
        "model": result.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


REQUEST_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": EmbeddingRequest.model_json_schema()}},
    }
}


@router.post("/embeddings", response_model=EmbeddingResponse, openapi_extra=REQUEST_SCHEMA)
async def create_embeddings(
    request: Request, service: EmbeddingsDep, caller: EmbeddingsCallerDep
) -> Response:
    caps = RequestCaps.of(request.app.state.runtime.settings)
    body = await read_body(request, caller, EmbeddingRequest, caps.check)
    texts = body.input if body.input and isinstance(body.input[0], str) else None
    job = EmbeddingJob(
        model=body.model,
        texts=texts,
        token_ids=None if texts is not None else body.input,  # type: ignore[arg-type]
        dimensions=body.dimensions,
        instruction=body.instruction,
    )
    # The admission's headers (api/admission.py), updated once the tokens are taken.
    context = RequestContext.of(request)
    rate_headers = context.rate_headers or {}
    result = await service.embed(caller, job, rate_headers)
    context.rate_limit(rate_headers)
    context.meter(result.model, len(result.vectors), result.prompt_tokens,
                  result.vectors.shape[1])  # fmt: skip
    return Response(await render_off_loop(request, caller, result, body.encoding_format),
                    media_type="application/json")  # fmt: skip


# Up to this many floats (64 vectors of 384: ~0.5 MB of JSON, ~1.5 ms here) a response is
# rendered on the event loop; a larger one (2048 of 384: ~15 MB, ~35 ms) on the parse pool,
# in its tenant's turn, so that one tenant's big answers do not stall every other request.
INLINE_FLOATS = 64 * 384


async def render_off_loop(
    request: Request, caller: Caller, result: EmbeddingResult, encoding_format: str
) -> bytes:
    if result.vectors.size <= INLINE_FLOATS:
        return render(result, encoding_format)
    runtime: Runtime = request.app.state.runtime
    return await runtime.parsing.run(caller.tenant.uid, lambda: render(result, encoding_format))
