"""Tokenization off the hot path, and padding without the tokenizer.

Hugging Face fast tokenizers must not be shared between threads ("Already borrowed"), so
small inputs are tokenized inline on the event loop with one instance, large ones on a
dedicated thread with a private copy, and the inference thread pads with NumPy.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

INLINE_CHARS = 8192


def encode(tokenizer: Any, texts: Sequence[str], truncate_to: int | None) -> list[list[int]]:
    encoded = tokenizer(
        list(texts),
        add_special_tokens=True,
        truncation=truncate_to is not None,
        max_length=truncate_to,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    return [list(ids) for ids in encoded["input_ids"]]


class TokenizerRunner:
    def __init__(self, tokenizer: Any, name: str) -> None:
        self._inline = tokenizer
        self._threaded = copy.deepcopy(tokenizer)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"embedgate-tokenize-{name}")

    async def __call__(self, texts: Sequence[str], truncate_to: int | None) -> list[list[int]]:
        if sum(len(text) for text in texts) <= INLINE_CHARS:
            return encode(self._inline, texts, truncate_to)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, encode, self._threaded, texts, truncate_to
        )

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
