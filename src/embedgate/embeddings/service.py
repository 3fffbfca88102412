"""Turn an embeddings request into model inputs, run them, and shape the vectors."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from embedgate.config.settings import Settings
from embedgate.embeddings.cache import EmbeddingCache
from embedgate.engine.backends.base import ModelInput, Vectors, estimate_tokens, l2_normalize
from embedgate.engine.queue_shares import Reservation
from embedgate.engine.registry import ModelRegistry, ServedModel
from embedgate.errors import EmbedgateError, invalid_request
from embedgate.limits.admission import Limits
from embedgate.observability.metrics import Metrics
from embedgate.tenancy.auth import Caller
from embedgate.tenancy.policy import Policy, check_token_ids, enforce_request


@dataclass(frozen=True, slots=True)
class EmbeddingJob:
    """What to embed: exactly one of ``texts`` and ``token_ids`` is set."""

    model: str | None
    texts: Sequence[str] | None = None
    token_ids: Sequence[Sequence[int]] | None = None
    dimensions: int | None = None
    instruction: str | None = None
    # The model's default query instruction, applied by search: not the client's choice, so
    # the plan's instruction rules do not apply to it.
    instruction_is_default: bool = False


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    model: str
    vectors: Vectors
    prompt_tokens: int
    cached: int = 0  # inputs answered from the cache


def truncate_and_normalize(vectors: Vectors, dimensions: int | None) -> Vectors:
    """Matryoshka-style `dimensions`: keep the prefix, then re-normalise to unit length."""
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    return l2_normalize(np.ascontiguousarray(vectors[:, :dimensions]))


class EmbeddingService:
    def __init__(
        self, registry: ModelRegistry, settings: Settings, metrics: Metrics, limits: Limits,
        cache: EmbeddingCache,
    ) -> None:  # fmt: skip
        self._registry = registry
        self._settings = settings
        self._metrics = metrics
        self._limits = limits
        self._cache = cache

    async def embed(
        self, caller: Caller, job: EmbeddingJob, rate_headers: dict[str, str] | None = None
    ) -> EmbeddingResult:
        """Embed for a tenant: its policy, token limits and quota are enforced before any
        model work; ``rate_headers`` receives the x-ratelimit-* headers of the admission.
        The request itself was admitted (rpm, concurrency) by its route, before its body
        was read (api/admission.py)."""
        policy = caller.policy
        model = self._registry.resolve_for(caller.tenant.id, job.model)
        if model.task != "embed":
            raise invalid_request(f"The model `{model.name}` is a rerank model; use /v1/rerank "
                                  "with it.", "model", code="wrong_model_task")  # fmt: skip
        self._check_dimensions(job.dimensions, model)
        enforce_request(
            policy, model=model.name, dimensions=job.dimensions or model.dimensions,
            instruction=None if job.instruction_is_default else job.instruction,
            texts=job.texts,
        )  # fmt: skip
        count = self._check_count(job, policy)
        # The inputs count against the tenant's share of the queue from now on: one over its
        # share of a full queue is refused before its inputs cost the tokenizer anything.
        with model.scheduler.reserve(caller.tenant.uid, policy.priority or 1.0, count) as room:
            inputs = await self._prepare(job, model, policy, caller.tenant.uid)
            if job.token_ids is not None:  # what the ids spell, as the model will see them
                await check_token_ids(policy, model.backend, [i.token_ids or () for i in inputs])
            tokens = sum(item.n_tokens for item in inputs)
            admission = await self._limits.admit_tokens(caller, tokens)
            if rate_headers is not None:
                rate_headers.update(admission.headers)
            succeeded = False
            try:
                vectors, tokens, cached = await self._vectors(caller, model, inputs, room)
                succeeded = True
            finally:
                await self._limits.finish(admission, succeeded=succeeded)
        self._metrics.tokens.labels(model.name).inc(tokens)
        self._metrics.inputs.labels(model.name).inc(len(inputs))
        vectors = truncate_and_normalize(vectors, job.dimensions)
        return EmbeddingResult(model.name, vectors, tokens, cached)

    async def _vectors(
        self, caller: Caller, model: ServedModel, inputs: list[ModelInput], room: Reservation
    ) -> tuple[Vectors, int, int]:
        """Full-size vectors, from the tenant's cache where it has them, else the model; the
        tokens to report (the backend's count where it has one: an upstream without a local
        tokenizer knows better than the estimate); and how many inputs came from the cache."""
        tenant = caller.tenant.uid
        found = self._cache.lookup(tenant, model.name, inputs) if self._cache.enabled else []
        missing = [i for i, vector in enumerate(found) if vector is None] if found else None
        todo = inputs if missing is None else [inputs[i] for i in missing]
        cached_tokens = sum(item.n_tokens for item in inputs) - sum(i.n_tokens for i in todo)
        if not todo:
            return np.stack(found), cached_tokens, len(inputs)  # type: ignore[arg-type]
        weight = caller.policy.priority or 1.0
        timeout = self._settings.request_timeout
        try:
            async with asyncio.timeout(timeout):
                embedded = await model.scheduler.submit(
                    todo, tenant=tenant, weight=weight, reservation=room
                )
        except TimeoutError:
            raise EmbedgateError(
                504, f"The request did not complete within {timeout:g}s. The server is busy; "
                "retry later or send fewer inputs per request.", code="timeout",
            ) from None  # fmt: skip
        if self._cache.enabled:
            self._cache.store(tenant, model.name, todo, embedded.vectors)
        tokens = cached_tokens + embedded.prompt_tokens
        if missing is None or len(todo) == len(inputs):
            return embedded.vectors, tokens, 0
        rows = list(found)
        for index, vector in zip(missing, embedded.vectors, strict=True):
            rows[index] = vector
        return np.stack(rows), tokens, len(inputs) - len(todo)  # type: ignore[arg-type]

    def _check_dimensions(self, dimensions: int | None, model: ServedModel) -> None:
        low, high = model.spec.min_dimensions, model.dimensions
        if dimensions is not None and not low <= dimensions <= high:
            raise invalid_request(
                f"`dimensions` must be between {low} and {high} for model `{model.name}`, "
                f"got {dimensions}.",
                "dimensions",
            )

    def _check_count(self, job: EmbeddingJob, policy: Policy) -> int:
        """The number of inputs, within the tighter of the server's and the plan's limits."""
        count = len(job.texts if job.texts is not None else job.token_ids or ())
        limit, whose = tighter(self._settings.max_inputs_per_request, "this server",
                               policy.max_inputs_per_request)  # fmt: skip
        if count > limit:
            raise invalid_request(
                f"Too many inputs: {count}. {whose.capitalize()} allows at most {limit} per "
                "request.",
                "input",
            )
        return count

    async def _prepare(
        self, job: EmbeddingJob, model: ServedModel, policy: Policy, tenant: str
    ) -> list[ModelInput]:
        """Model inputs within the tighter of the server's (or model's) and the plan's token
        limits; truncation, when on, cuts to that same token limit."""
        max_tokens, whose = tighter(model.max_tokens, f"model `{model.name}`",
                                    policy.max_tokens_per_input)  # fmt: skip
        truncate_to = max_tokens if self._settings.truncate_inputs else None
        if job.token_ids is not None:
            inputs = self._from_token_ids(job, model, truncate_to)
        else:
            inputs = await self._from_texts(job, model, truncate_to, tenant)
        _check_lengths(inputs, max_tokens, whose)
        return inputs

    def _from_token_ids(
        self, job: EmbeddingJob, model: ServedModel, truncate_to: int | None
    ) -> list[ModelInput]:
        if job.instruction is not None:
            raise invalid_request(
                "`instruction` applies to text input only; send text instead of token ids.",
                "instruction",
            )
        id_lists = job.token_ids or ()
        vocab = model.info.vocab_size
        if vocab is not None:
            _check_vocabulary(id_lists, vocab, model.name)
        return [
            ModelInput(None, kept, len(kept))
            for kept in (list(ids[:truncate_to] if truncate_to is not None else ids)
                         for ids in id_lists)
        ]  # fmt: skip

    async def _from_texts(
        self, job: EmbeddingJob, model: ServedModel, truncate_to: int | None, tenant: str
    ) -> list[ModelInput]:
        texts = self._apply_instruction(list(job.texts or ()), job.instruction, model)
        if not model.backend.can_tokenize():
            return [ModelInput(text, None, estimate_tokens(text)) for text in texts]
        id_lists = await model.backend.tokenize(texts, truncate_to, tenant)
        return [
            # A text cut to the limit travels as its token ids: what is embedded is what
            # was counted, on every backend.
            ModelInput(None if len(ids) == truncate_to else text, ids, len(ids))
            for text, ids in zip(texts, id_lists, strict=True)
        ]

    def _apply_instruction(
        self, texts: list[str], instruction: str | None, model: ServedModel
    ) -> list[str]:
        if instruction is None:
            return texts
        if not model.supports_instructions:
            raise invalid_request(
                f"The model `{model.name}` does not support instructions; remove `instruction`.",
                "instruction",
                code="instruction_not_supported",
            )
        if not instruction.strip():
            raise invalid_request("`instruction` must not be empty.", "instruction")
        template = model.query_template
        return [template.format(instruction=instruction, text=text) for text in texts]


def tighter(own: int, owner: str, plan: int | None) -> tuple[int, str]:
    """The smaller of a server or model limit and the plan's, and who sets it."""
    return (plan, "your plan") if plan is not None and plan < own else (own, owner)


def _check_lengths(inputs: Sequence[ModelInput], limit: int, whose: str) -> None:
    for index, item in enumerate(inputs):
        if item.token_ids is not None and item.n_tokens > limit:
            raise invalid_request(
                f"input[{index}] is {item.n_tokens} tokens long; {whose} accepts at most "
                f"{limit}. Shorten the input, or ask the operator to enable truncation "
                "(EMBEDGATE_TRUNCATE_INPUTS).",
                "input",
                code="context_length_exceeded",
            )


def _check_vocabulary(id_lists: Sequence[Sequence[int]], vocab: int, model: str) -> None:
    """400 naming the first input with an id outside 0..vocab-1: one NumPy pass over every
    id (a request may carry millions), not a Python loop per id."""
    lengths = np.fromiter((len(ids) for ids in id_lists), dtype=np.int64, count=len(id_lists))
    try:
        flat = np.fromiter(chain.from_iterable(id_lists), dtype=np.int64, count=int(lengths.sum()))
        bad = np.flatnonzero((flat < 0) | (flat >= vocab))
        first = int(bad[0]) if bad.size else None
    except OverflowError:  # beyond 64 bits: outside any vocabulary; find where, slowly
        first = next(i for i, tok in enumerate(chain.from_iterable(id_lists))
                     if not 0 <= tok < vocab)  # fmt: skip
    if first is not None:
        index = int(np.searchsorted(np.cumsum(lengths), first, side="right"))
        raise invalid_request(
            f"input[{index}] has token ids outside the vocabulary of `{model}` (0..{vocab - 1}).",
            "input",
        )
