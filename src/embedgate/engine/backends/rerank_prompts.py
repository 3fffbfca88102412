"""How a (query, document) pair becomes one token sequence, per rerank family.

Qwen3-Reranker (its model card): ``prefix + pair + suffix`` ids, where the pair text is
``<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}`` tokenized on its own
and cut to ``max_length - len(prefix) - len(suffix)``; the score is softmax over the "no"
and "yes" logits of the last position, taken as P(yes).

A CrossEncoder: the tokenizer's pair encoding (``[CLS] q [SEP] d [SEP]`` for BERT), cut
``longest_first``. The token types travel with the ids as ``ModelInput.second_segment``
(where type 1 starts, from the encoding's own type ids), not re-derived from [SEP] ids,
which a query could spell.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from embedgate.config.models import QWEN3_DEFAULT_INSTRUCTION
from embedgate.engine.backends.base import ModelInput
from embedgate.engine.backends.tokenizing import chunks
from embedgate.engine.workpool import WorkPool

QWEN3_RERANK_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
QWEN3_RERANK_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_RERANK_QUERY = "<Instruct>: {instruction}\n<Query>: {query}\n"
QWEN3_RERANK_DOCUMENT = "<Document>: {doc}"
QWEN3_RERANK_PAIR = QWEN3_RERANK_QUERY + QWEN3_RERANK_DOCUMENT
INLINE_PAIRS = 32  # fewer pairs than this are encoded on the event loop


class Qwen3Prompt:
    def __init__(self, tokenizer: Any) -> None:
        self.prefix = list(tokenizer.encode(QWEN3_RERANK_PREFIX, add_special_tokens=False))
        self.suffix = list(tokenizer.encode(QWEN3_RERANK_SUFFIX, add_special_tokens=False))
        yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
        if None in (yes, no) or tokenizer.unk_token_id in (yes, no):
            raise ValueError("a Qwen3 reranker's tokenizer needs `yes` and `no` tokens")
        self.yes, self.no = int(yes), int(no)

    @staticmethod
    def pair(instruction: str | None, query: str, doc: str) -> str:
        task = QWEN3_DEFAULT_INSTRUCTION if instruction is None else instruction
        return QWEN3_RERANK_PAIR.format(instruction=task, query=query, doc=doc)

    def room(self, max_tokens: int) -> int:
        """How long the pair part may be, for the whole sequence to fit ``max_tokens``."""
        return max(1, max_tokens - len(self.prefix) - len(self.suffix))

    def wrap(self, pair_ids: Sequence[int]) -> ModelInput:
        ids = [*self.prefix, *pair_ids, *self.suffix]
        return ModelInput(None, ids, len(ids))

    def score(self, last_logits: Any) -> Any:
        import torch

        two = torch.stack([last_logits[:, self.no], last_logits[:, self.yes]], dim=1)
        return torch.nn.functional.log_softmax(two.float(), dim=1)[:, 1].exp()


def qwen3_split_pair(instruction: str | None, query: str) -> tuple[str, str]:
    """Qwen3-Reranker's whole prompt as the query and document texts of an engine that joins
    the two (vLLM's recipe for the model): the query text, and the document template
    (``{doc}``); query + document is exactly ``prefix + pair + suffix``."""
    task = QWEN3_DEFAULT_INSTRUCTION if instruction is None else instruction
    head = QWEN3_RERANK_PREFIX + QWEN3_RERANK_QUERY.format(instruction=task, query=query)
    return head, QWEN3_RERANK_DOCUMENT + QWEN3_RERANK_SUFFIX


class PairEncoder:
    """A CrossEncoder tokenizer's pair encoding, on the Rust tokenizer: on the event loop for
    a few pairs, else in chunks on the tenant-fair work pool (as ``TokenizerRunner`` does for
    embedding inputs), so one tenant's thousand documents delay another's few by about one
    chunk. A Rust tokenizer is not shared between threads: each has its own copy."""

    token_types = True  # whether the model reads token_type_ids

    def __init__(self, tokenizer: Any, name: str, threads: int | None = None) -> None:
        self._json = tokenizer.backend_tokenizer.to_str()
        self._inline = self._fresh()
        self._local = threading.local()  # each pool thread's own tokenizer
        self._pool = WorkPool(threads or min(4, os.cpu_count() or 1), f"pairs-{name}")

    async def __call__(
        self, query: str, documents: Sequence[str], truncate_to: int | None, tenant: str = ""
    ) -> list[tuple[list[int], int | None]]:
        if len(documents) < INLINE_PAIRS:
            return _encode(self._inline, query, documents, truncate_to)
        parts = await asyncio.gather(*(
            self._pool.run(tenant, partial(self._encode_here, query, chunk, truncate_to))
            for chunk in chunks(documents)
        ))  # fmt: skip
        return [pair for part in parts for pair in part]

    def close(self) -> None:
        self._pool.close()

    def _fresh(self) -> Tokenizer:
        rust = Tokenizer.from_str(self._json)
        rust.no_padding()
        rust.no_truncation()
        return rust

    def _encode_here(
        self, query: str, documents: Sequence[str], truncate_to: int | None
    ) -> list[tuple[list[int], int | None]]:
        """On a pool thread, with that thread's own tokenizer."""
        rust: Tokenizer | None = getattr(self._local, "rust", None)
        if rust is None:
            rust = self._local.rust = self._fresh()
        return _encode(rust, query, documents, truncate_to)


def _encode(
    rust: Tokenizer, query: str, documents: Sequence[str], truncate_to: int | None
) -> list[tuple[list[int], int | None]]:
    if truncate_to is None:
        rust.no_truncation()
    else:
        rust.enable_truncation(truncate_to, strategy="longest_first")
    out: list[tuple[list[int], int | None]] = []
    for enc in rust.encode_batch([(query, doc) for doc in documents], add_special_tokens=True):
        second = next((i for i, kind in enumerate(enc.type_ids) if kind == 1), None)
        out.append((list(enc.ids), second))
    return out


def pad_pairs(
    inputs: Sequence[ModelInput], pad_id: int, *, left: bool
) -> dict[str, npt.NDArray[np.int64]]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids`` (1 from each input's second
    segment on) for a batch, padded on the given side."""
    width = max(item.n_tokens for item in inputs)
    shape = (len(inputs), width)
    ids = np.full(shape, pad_id, dtype=np.int64)
    mask = np.zeros(shape, dtype=np.int64)
    types = np.zeros(shape, dtype=np.int64)
    for row, item in enumerate(inputs):
        tokens = list(item.token_ids or ())
        start = width - len(tokens) if left else 0
        ids[row, start : start + len(tokens)] = tokens
        mask[row, start : start + len(tokens)] = 1
        if item.second_segment is not None:
            types[row, start + item.second_segment : start + len(tokens)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
