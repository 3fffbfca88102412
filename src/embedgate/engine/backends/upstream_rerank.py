"""Rerank through upstream engines: vLLM, SGLang, TEI, Infinity (``rerank_shapes``).

One pair is one ``ModelInput`` (the document as ``text``, the query as ``query``), so the
upstream scheduler queues, windows and coalesces pairs as it does embedding inputs. An
engine reads one query per request: ``embed_at`` sends the pairs of each query in a batch
as one request of their own, all at once, and answers one 1-wide row (the score) per pair.

Qwen3-Reranker: engines that join query and document into one sequence (vLLM, TEI and
Infinity serving its sequence-classification form) get the model card's whole prompt from
embedgate, split as vLLM's recipe does (``qwen3_split_pair``); SGLang applies the prompt
itself (its ``qwen3_reranker.jinja`` chat template) and gets the instruction as
``instruct``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedgate.config.models import UpstreamModel
from embedgate.engine.backends.base import Embedded, ModelInput, PairQuery, estimate_tokens
from embedgate.engine.backends.rerank_prompts import qwen3_split_pair
from embedgate.engine.backends.rerank_shapes import parse_rerank, rerank_request
from embedgate.engine.backends.upstream import UpstreamBackend, malformed


class UpstreamRerankBackend(UpstreamBackend):
    answers = "rerank"
    inputs_param = "documents"

    def __init__(self, name: str, spec: UpstreamModel) -> None:
        super().__init__(name, spec)
        self._api = spec.rerank_api
        self._qwen3 = spec.family == "qwen3"
        family = "qwen3" if self._qwen3 else "cross-encoder"
        self._info = dataclasses.replace(self._info, dimensions=1, family=family)

    async def tokenize_pairs(
        self, query: str, documents: Sequence[str], instruction: str | None,
        truncate_to: int | None, tenant: str = "",
    ) -> list[ModelInput]:  # fmt: skip
        """The pairs as the engine gets them; their tokens counted by the local tokenizer
        where one is configured, else estimated. The engine truncates (where it can be
        asked to), so a count is at most ``truncate_to`` when set."""
        head, docs, sent = query, list(documents), None
        if self._qwen3 and self._api != "sglang":
            head, template = qwen3_split_pair(instruction, query)
            docs = [template.format(doc=doc) for doc in documents]
        elif self._qwen3:
            sent = instruction
        pair = PairQuery(head, sent, truncate=truncate_to is not None)
        if self._tokenizer is not None:
            ids = await self._tokenizer([head, *docs], None, tenant)
            counts = [len(ids[0]) + len(doc_ids) for doc_ids in ids[1:]]
        else:
            first = estimate_tokens(head)
            counts = [first + estimate_tokens(doc) for doc in docs]
        if truncate_to is not None:
            counts = [min(count, truncate_to) for count in counts]
        return [ModelInput(doc, None, count, query=pair)
                for doc, count in zip(docs, counts, strict=True)]  # fmt: skip

    async def embed_at(self, url: str, inputs: Sequence[ModelInput]) -> Embedded:
        groups: dict[PairQuery, list[int]] = {}
        for index, item in enumerate(inputs):
            assert item.query is not None, "a rerank input carries its query"
            groups.setdefault(item.query, []).append(index)
        calls = [asyncio.ensure_future(self._rerank_at(url, query, [inputs[i] for i in rows]))
                 for query, rows in groups.items()]  # fmt: skip
        try:
            parts = await asyncio.gather(*calls)
        except BaseException:
            for call in calls:  # one failed: the batch is retried or fails as a whole
                call.cancel()
            raise
        scores = np.empty((len(inputs), 1), dtype=np.float32)
        for rows, (values, _) in zip(groups.values(), parts, strict=True):
            scores[rows, 0] = values
        return Embedded(scores, sum(tokens for _, tokens in parts))

    def health(self) -> dict[str, Any]:
        return {**super().health(), "task": "rerank"}

    async def _rerank_at(
        self, url: str, query: PairQuery, items: Sequence[ModelInput]
    ) -> tuple[list[float], int]:
        documents = [item.text or "" for item in items]
        model = self._spec.upstream_model or self.name
        body = await self._post(url, "/rerank", rerank_request(self._api, model, query, documents))
        try:
            scored = parse_rerank(self._api, body, len(documents))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise malformed(self.answers) from exc
        counted = sum(item.n_tokens for item in items)
        exact = self._tokenizer is not None
        return scored.scores, counted if exact or scored.tokens is None else scored.tokens
