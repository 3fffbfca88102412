"""The model backend interface: tokenize up front (and decode back, for content checks),
embed a batch, report health."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class PairQuery:
    """The query side of rerank pairs sent to an upstream engine, which reads the query and
    each document apart: every pair of one request shares one."""

    text: str  # the query, formatted by embedgate where the engine does not (Qwen3)
    instruction: str | None = None  # sent as the engine's own field (SGLang's `instruct`)
    truncate: bool = False  # ask the engine to cut pairs to its limit, where it can


@dataclass(frozen=True, slots=True)
class ModelInput:
    """One input ready for a model: prompt-formatted text and/or its token ids."""

    text: str | None
    token_ids: Sequence[int] | None
    n_tokens: int  # exact when token_ids is set, an estimate otherwise
    # A (query, document) pair of a cross-encoder: where the second segment (token type 1)
    # starts in token_ids. None: one segment.
    second_segment: int | None = None
    # A rerank pair for an upstream engine: ``text`` is the document, this the query.
    query: PairQuery | None = None


@dataclass(frozen=True, slots=True)
class Embedded:
    """Unit-length float32 vectors, one row per input, and the tokens they cost."""

    vectors: Vectors
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class BackendInfo:
    dimensions: int
    max_tokens: int
    family: str  # "qwen3" or "generic"
    vocab_size: int | None  # None when token ids cannot be checked locally
    device: str  # "cpu", "cuda", "cuda:1", ... or "upstream"


class Backend(Protocol):
    """A model engine. ``coalesce`` says whether the batch scheduler may merge requests."""

    coalesce: bool
    lanes: int  # model calls that may run at once (the scheduler's express lane needs 2)
    # Lane 0 runs ``embed`` calls one after another, in the order they were made: the
    # scheduler may then hand over the next batch while one runs, so the model never waits
    # for the event loop between two batches.
    pipelined: bool

    @property
    def info(self) -> BackendInfo: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def can_tokenize(self) -> bool: ...

    async def tokenize(
        self, texts: Sequence[str], truncate_to: int | None, tenant: str = ""
    ) -> list[list[int]]: ...

    async def decode(self, id_lists: Sequence[Sequence[int]]) -> list[str]:
        """The text of each token-id list, special tokens left out; only where
        ``can_tokenize()``."""
        ...

    async def embed(self, inputs: Sequence[ModelInput], *, lane: int = 0) -> Embedded:
        """The inputs' vectors, computed on ``lane`` (0 ... ``lanes`` - 1)."""
        ...

    def health(self) -> dict[str, Any]: ...


class PairTokenizer(Protocol):
    """What a rerank backend adds: one model input per (query, document) pair."""

    async def tokenize_pairs(
        self, query: str, documents: Sequence[str], instruction: str | None,
        truncate_to: int | None, tenant: str = "",
    ) -> list[ModelInput]:  # fmt: skip
        """Each at most ``truncate_to`` tokens long when set (the model's own truncation
        rule), else whole."""
        ...


def estimate_tokens(text: str) -> int:
    """For upstreams without a local tokenizer: about four UTF-8 bytes per token."""
    return max(1, len(text.encode("utf-8")) // 4)


def l2_normalize(vectors: npt.NDArray[Any]) -> Vectors:
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out: Vectors = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return out
