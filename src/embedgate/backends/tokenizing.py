"""Tokenization off the hot path, and padding without the tokenizer.

Inputs are encoded by the Rust ``tokenizers.Tokenizer`` behind a transformers tokenizer,
called directly: the same ids, without transformers' per-call Python overhead. Rust
tokenizers must not be shared between threads ("Already borrowed"), so small inputs are
tokenized inline on the event loop with one instance, large ones on a dedicated thread
with a private copy, and the inference thread pads with NumPy.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

INLINE_CHARS = 8192


class _Encoder:
    """One thread's tokenizer: the Rust one when there is one, else transformers' call."""

    def __init__(self, tokenizer: Any) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._rust: Tokenizer | None = None
        self._hf = None if backend is not None else copy.deepcopy(tokenizer)
        if backend is not None:
            # tokenizer.json may carry padding or truncation of its own: embedgate decides.
            self._rust = Tokenizer.from_str(backend.to_str())
            self._rust.no_padding()
            self._rust.no_truncation()
        self._truncate_to: int | None = None

    def __call__(self, texts: Sequence[str], truncate_to: int | None) -> list[list[int]]:
        if self._rust is None:
            encoded = self._hf(  # type: ignore[misc]
                list(texts), truncation=truncate_to is not None, max_length=truncate_to,
                return_attention_mask=False, return_token_type_ids=False, verbose=False,
            )  # fmt: skip
            return [list(ids) for ids in encoded["input_ids"]]
        if truncate_to != self._truncate_to:
            if truncate_to is None:
                self._rust.no_truncation()
            else:
                self._rust.enable_truncation(truncate_to)
            self._truncate_to = truncate_to
        return [enc.ids for enc in self._rust.encode_batch(list(texts), add_special_tokens=True)]


class TokenizerRunner:
    def __init__(self, tokenizer: Any, name: str) -> None:
        self._inline = _Encoder(tokenizer)
        self._threaded = _Encoder(tokenizer)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"embedgate-tokenize-{name}")

    async def __call__(self, texts: Sequence[str], truncate_to: int | None) -> list[list[int]]:
        if sum(len(text) for text in texts) <= INLINE_CHARS:
            return self._inline(texts, truncate_to)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._threaded, texts, truncate_to)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def pad(
    id_lists: Sequence[Sequence[int]], pad_id: int, left: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``input_ids`` and ``attention_mask`` for a batch, padded on the given side."""
    width = max(len(ids) for ids in id_lists)
    input_ids = np.full((len(id_lists), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(id_lists), width), dtype=np.int64)
    for row, ids in enumerate(id_lists):
        span = slice(width - len(ids), width) if left else slice(0, len(ids))
        input_ids[row, span] = ids
        mask[row, span] = 1
    return input_ids, mask
