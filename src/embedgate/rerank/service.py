"""Turn a rerank request into one model input per (query, document) pair, run them through
the model's batch scheduler like embeddings, and order the documents by score.

Every limit of the embeddings path applies: the plan's models, instructions and blocked
terms (``enforce_request``), the tighter of the server's and the plan's document and token
limits, the tenant's share of the queue, its tokens per minute and quota. A pair costs its
query and document tokens (with the model's prompt), in the scheduler and in the limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from embedgate.config.settings import Settings
from embedgate.embeddings.service import tighter
from embedgate.engine.backends.base import ModelInput, PairTokenizer
from embedgate.engine.queue_shares import Reservation
from embedgate.engine.registry import ModelRegistry, ServedModel
from embedgate.errors import EmbedgateError, invalid_request
from embedgate.limits.admission import Limits
from embedgate.observability.metrics import Metrics
from embedgate.tenancy.auth import Caller
from embedgate.tenancy.policy import Policy, enforce_request


@dataclass(frozen=True, slots=True)
class RerankJob:
    model: str | None
    query: str
    documents: Sequence[str]
    top_n: int | None = None
    instruction: str | None = None


@dataclass(frozen=True, slots=True)
class Ranked:
    index: int
    score: float


@dataclass(frozen=True, slots=True)
class RerankResult:
    model: str
    results: list[Ranked]  # by score, highest first; at most top_n
    tokens: int


def wrong_task(model: ServedModel, route: str) -> EmbedgateError:
    kind = "a rerank" if model.task == "rerank" else "an embedding"
    return invalid_request(f"The model `{model.name}` is {kind} model; use {route} with it.",
                           "model", code="wrong_model_task")  # fmt: skip


class RerankService:
    def __init__(
        self, registry: ModelRegistry, settings: Settings, metrics: Metrics, limits: Limits
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._metrics = metrics
        self._limits = limits

    async def rerank(
        self, caller: Caller, job: RerankJob, rate_headers: dict[str, str] | None = None
    ) -> RerankResult:
        policy = caller.policy
        name = job.model or self.default_model(caller)
        model = self._registry.resolve_for(caller.tenant.id, name)
        if model.task != "rerank":
            raise wrong_task(model, "/v1/embeddings")
        instruction = self._instruction(job.instruction, model)
        enforce_request(policy, model=model.name, dimensions=1, instruction=job.instruction,
                        texts=[job.query, *job.documents])  # fmt: skip
        count = self._check_count(len(job.documents), policy)
        with model.scheduler.reserve(caller.tenant.uid, policy.priority or 1.0, count) as room:
            inputs = await self._prepare(job, instruction, model, policy, caller.tenant.uid)
            admission = await self._limits.admit_tokens(caller, sum(i.n_tokens for i in inputs))
            if rate_headers is not None:
                rate_headers.update(admission.headers)
            succeeded = False
            try:
                scores, tokens = await self._scores(caller, model, inputs, room)
                succeeded = True
            finally:
                await self._limits.finish(admission, succeeded=succeeded)
        self._metrics.tokens.labels(model.name).inc(tokens)
        self._metrics.inputs.labels(model.name).inc(len(inputs))
        ranked = sorted((Ranked(i, s) for i, s in enumerate(scores)), key=lambda r: -r.score)
        return RerankResult(model.name, ranked[: job.top_n], tokens)

    async def _scores(
        self, caller: Caller, model: ServedModel, inputs: list[ModelInput], room: Reservation
    ) -> tuple[list[float], int]:
        timeout = self._settings.request_timeout
        try:
            async with asyncio.timeout(timeout):
                embedded = await model.scheduler.submit(
                    inputs, tenant=caller.tenant.uid, weight=caller.policy.priority or 1.0,
                    reservation=room,
                )  # fmt: skip
        except TimeoutError:
            raise EmbedgateError(
                504, f"The request did not complete within {timeout:g}s. The server is busy; "
                "retry later or send fewer documents per request.", code="timeout",
            ) from None  # fmt: skip
        return [float(row[0]) for row in embedded.vectors], embedded.prompt_tokens

    def default_model(self, caller: Caller, param: str = "model") -> str:
        """The first rerank model the tenant may use; else the first it can see (which its
        plan then refuses, naming it)."""
        tenant, allowed = caller.tenant.id, caller.policy.allowed_models
        visible = [m.name for m in self._registry.all()
                   if m.task == "rerank" and m.visible_to(tenant)]  # fmt: skip
        if not visible:
            raise invalid_request("This server has no rerank model.", param)
        usable = [name for name in visible if allowed is None or name in allowed]
        return (usable or visible)[0]

    def document_limit(self, policy: Policy) -> tuple[int, str]:
        """Most documents per rerank request, and whose limit it is. More than the model's
        queue holds could never be queued: 400 at once, not 503s forever."""
        server = min(self._settings.max_rerank_documents, self._settings.max_queue_inputs)
        return tighter(server, "this server", policy.max_documents_per_rerank)

    def _instruction(self, instruction: str | None, model: ServedModel) -> str | None:
        if instruction is None:
            return model.default_instruction
        if not model.supports_instructions:
            raise invalid_request(
                f"The model `{model.name}` does not support instructions; remove `instruction`.",
                "instruction", code="instruction_not_supported",
            )  # fmt: skip
        if not instruction.strip():
            raise invalid_request("`instruction` must not be empty.", "instruction")
        return instruction

    def _check_count(self, count: int, policy: Policy) -> int:
        limit, whose = self.document_limit(policy)
        if count > limit:
            raise invalid_request(
                f"Too many documents: {count}. {whose.capitalize()} allows at most {limit} "
                "per rerank request.",
                "documents",
            )
        return count

    async def _prepare(
        self, job: RerankJob, instruction: str | None, model: ServedModel, policy: Policy,
        tenant: str,
    ) -> list[ModelInput]:  # fmt: skip
        """One input per pair, within the tighter of the model's and the plan's token limit
        (cut to it by the model's own rule when truncation is on, else 400)."""
        backend = cast(PairTokenizer, model.backend)  # a rerank model's backend
        limit, whose = tighter(model.max_tokens, f"model `{model.name}`",
                               policy.max_tokens_per_input)  # fmt: skip
        truncate_to = limit if self._settings.truncate_inputs else None
        inputs = await backend.tokenize_pairs(
            job.query, job.documents, instruction, truncate_to, tenant
        )
        for index, item in enumerate(inputs):
            if item.n_tokens > limit:
                raise invalid_request(
                    f"The query with documents[{index}] is {item.n_tokens} tokens long; "
                    f"{whose} accepts at most {limit}. Shorten them, or ask the operator to "
                    "enable truncation (EMBEDGATE_TRUNCATE_INPUTS).",
                    "documents", code="context_length_exceeded",
                )  # fmt: skip
        return inputs
