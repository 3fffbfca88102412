"""Two-stage search: the candidates a search retrieves, reranked by a rerank model.

``plan`` checks the request's ``rerank`` before any work (the model, the plan's models,
the number of candidates), so a refused two-stage search embeds nothing and reads no
store. ``rerank`` then scores the retrieved candidates through ``RerankService``: the
tenant's policy, token limits, quota and fair scheduling apply as on /v1/rerank.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from embedgate.config.settings import Settings
from embedgate.docstore.base import Hit
from embedgate.engine.registry import ModelRegistry, ServedModel
from embedgate.errors import EmbedgateError, invalid_request
from embedgate.rerank.service import RerankJob, RerankService
from embedgate.tenancy.auth import Caller
from embedgate.tenancy.policy import check_model

CANDIDATES_PER_RESULT = 4  # the default candidates: this many per result asked for
_DOCUMENT_INDEX = re.compile(r"documents\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class RerankStage:
    """What a search request asks of its rerank stage (None: the defaults)."""

    model: str | None = None
    candidates: int | None = None


@dataclass(frozen=True, slots=True)
class Planned:
    """A checked rerank stage: the model to use and how many candidates to retrieve."""

    model: str
    candidates: int


@dataclass(frozen=True, slots=True)
class Reranked:
    """What the rerank stage did: one score per returned hit, in their order."""

    model: str
    scores: list[float]
    tokens: int
    documents: int  # candidates scored


class TwoStage:
    def __init__(self, service: RerankService, registry: ModelRegistry, settings: Settings) -> None:
        self._service = service
        self._registry = registry
        self._settings = settings

    def plan(self, caller: Caller, stage: RerankStage, top_k: int) -> Planned:
        """The stage's model and candidates, or the 400/403/404 that refuses it."""
        model = self._model(caller, stage.model)
        limit, whose = self._service.document_limit(caller.policy)
        if top_k > limit:
            raise invalid_request(
                f"`top_k` is {top_k}, but {whose} reranks at most {limit} documents per "
                "request; ask for fewer results, or search without `rerank`.", "top_k",
            )  # fmt: skip
        candidates = stage.candidates
        if candidates is None:
            return Planned(model.name, min(CANDIDATES_PER_RESULT * top_k, limit))
        if candidates < top_k:
            raise invalid_request(f"`rerank.candidates` must be at least `top_k` ({top_k}), "
                                  f"got {candidates}.", "rerank.candidates")  # fmt: skip
        if candidates > limit:
            raise invalid_request(f"`rerank.candidates` is {candidates}; {whose} reranks at "
                                  f"most {limit} documents per request.",
                                  "rerank.candidates")  # fmt: skip
        return Planned(model.name, candidates)

    async def rerank(
        self, caller: Caller, planned: Planned, query: str, hits: Sequence[Hit], top_k: int,
        rate_headers: dict[str, str] | None,
    ) -> tuple[list[Hit], Reranked]:  # fmt: skip
        """The best ``top_k`` of ``hits`` by the rerank model's score, best first (ties keep
        the retrieval's order), with their scores."""
        if not hits:  # nothing retrieved: nothing to score, nothing spent
            return [], Reranked(planned.model, [], 0, 0)
        job = RerankJob(model=planned.model, query=query, documents=[h.text for h in hits],
                        top_n=top_k)  # fmt: skip
        try:
            result = await self._service.rerank(caller, job, rate_headers)
        except EmbedgateError as exc:
            raise _in_stage(exc, hits) from None
        chosen = [hits[r.index] for r in result.results]
        scores = [r.score for r in result.results]
        return chosen, Reranked(result.model, scores, result.tokens, len(hits))

    def _model(self, caller: Caller, name: str | None) -> ServedModel:
        tenant = caller.tenant.id
        try:
            model = self._registry.resolve_for(
                tenant, name or self._service.default_model(caller, "rerank.model")
            )
            if model.task != "rerank":
                raise invalid_request(f"The model `{model.name}` is an embedding model; "
                                      "`rerank.model` needs a rerank model.", "rerank.model",
                                      code="wrong_model_task")  # fmt: skip
            check_model(caller.policy, model.name)
        except EmbedgateError as exc:
            exc.param = "rerank.model" if exc.param == "model" else exc.param
            raise
        return model


def _in_stage(error: EmbedgateError, hits: Sequence[Hit]) -> EmbedgateError:
    """A refusal of the rerank stage, in the search request's terms: `documents[i]` is the
    candidate document whose id it names, the candidates are `rerank.candidates`."""
    if error.param == "documents":
        error.param = "rerank.candidates"

        def name(match: re.Match[str]) -> str:
            index = int(match.group(1))
            return f"the document `{hits[index].id}`" if index < len(hits) else match.group(0)

        error.message = _DOCUMENT_INDEX.sub(name, error.message)
        error.args = (error.message,)
    elif error.param == "model":
        error.param = "rerank.model"
    return error
