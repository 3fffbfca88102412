"""The rerank request and answer of each engine family, at ``{base_url}/rerank``.

* ``cohere``: vLLM, Infinity, LiteLLM and embedgate itself.
  ``{"model", "query", "documents"}`` -> ``{"results": [{"index", "relevance_score"}],
  "usage": {"total_tokens" | "prompt_tokens"}}`` (Infinity's ``document`` is a string, vLLM's
  an object: neither is read).
* ``sglang``: ``{"query", "documents", "instruct"?}`` -> ``[{"index", "score", "document",
  "meta_info"?}]``.
* ``tei`` (text-embeddings-inference): ``{"query", "texts", "raw_scores": false}`` ->
  ``[{"index", "score"}]``.

No ``top_n`` is sent: embedgate needs every score (a request may travel in several parts,
ranked together afterwards). A parser raises ``KeyError``, ``TypeError`` or ``ValueError``
on an answer that is not whole: one score per document sent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from embedgate.engine.backends.base import PairQuery

RerankApi = Literal["cohere", "sglang", "tei"]


@dataclass(frozen=True, slots=True)
class Scored:
    scores: list[float]  # one per document, in the order sent
    tokens: int | None  # what the engine says it read, where it says


def rerank_request(
    api: RerankApi, model: str, query: PairQuery, documents: Sequence[str]
) -> dict[str, Any]:
    if api == "tei":
        body: dict[str, Any] = {"query": query.text, "texts": list(documents),
                                "raw_scores": False, "return_text": False}  # fmt: skip
        if query.truncate:
            body["truncate"] = True
        return body
    body = {"model": model, "query": query.text, "documents": list(documents)}
    if api == "sglang" and query.instruction is not None:
        body["instruct"] = query.instruction
    return body


def parse_rerank(api: RerankApi, body: Any, count: int) -> Scored:
    rows = body["results"] if api == "cohere" else body
    key = "relevance_score" if api == "cohere" else "score"
    if not isinstance(rows, list) or len(rows) != count:
        raise ValueError(f"expected {count} results")
    scores: list[float | None] = [None] * count
    for row in rows:
        index = row["index"]
        if type(index) is not int or not 0 <= index < count or scores[index] is not None:
            raise ValueError("result indices are not the documents sent")
        score = row[key]
        if isinstance(score, bool) or not isinstance(score, int | float) or math.isnan(score):
            raise ValueError("a score is not a number")
        scores[index] = float(score)
    return Scored([s for s in scores if s is not None], _tokens(api, body))


def _tokens(api: RerankApi, body: Any) -> int | None:
    if api == "cohere":
        usage = body.get("usage")
        if isinstance(usage, dict):
            value = usage.get("total_tokens", usage.get("prompt_tokens"))
            return value if type(value) is int and value >= 0 else None
        return None
    if api != "sglang":
        return None
    total = 0
    for row in body:  # SGLang counts each pair in its meta_info, where it reports one
        meta = row.get("meta_info")
        count = meta.get("prompt_tokens") if isinstance(meta, dict) else None
        if type(count) is not int or count < 0:
            return None
        total += count
    return total
