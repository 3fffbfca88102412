"""Tokenization off the hot path, and padding without the tokenizer.

Inputs are encoded by the Rust ``tokenizers.Tokenizer`` behind a transformers tokenizer,
called directly: the same ids, without transformers' per-call Python overhead. Rust
tokenizers must not be shared between threads ("Already borrowed"), so small inputs are
tokenized inline on the event loop with one instance, and large ones in chunks on a small
pool of threads, each with a private copy, served round-robin between tenants
(engine/workpool.py): one tenant's huge request delays another's by about one chunk.
The inference thread pads with NumPy.
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from embedgate.engine.workpool import WorkPool

INLINE_CHARS = 8192
CHUNK_INPUTS = 64  # a chunk is at most this many inputs ...
CHUNK_CHARS = 256 * 1024  # ... or about this much text (tens of milliseconds of work)


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
    def __init__(self, tokenizer: Any, name: str, threads: int | None = None) -> None:
        self._tokenizer = tokenizer
        self._inline = _Encoder(tokenizer)
        self._local = threading.local()  # each pool thread's own encoder
        self._pool = WorkPool(threads or min(4, os.cpu_count() or 1), f"tokenize-{name}")

    async def __call__(
        self, texts: Sequence[str], truncate_to: int | None, tenant: str = ""
    ) -> list[list[int]]:
        if sum(len(text) for text in texts) <= INLINE_CHARS:
            return self._inline(texts, truncate_to)
        parts = await asyncio.gather(*(
            self._pool.run(tenant, partial(self._encode, chunk, truncate_to))
            for chunk in chunks(texts)
        ))  # fmt: skip
        return [ids for part in parts for ids in part]

    def _encode(self, texts: Sequence[str], truncate_to: int | None) -> list[list[int]]:
        """On a pool thread, with that thread's own encoder."""
        encoder: _Encoder | None = getattr(self._local, "encoder", None)
        if encoder is None:
            encoder = self._local.encoder = _Encoder(self._tokenizer)
        return encoder(texts, truncate_to)

    def close(self) -> None:
        self._pool.close()


def chunks(texts: Sequence[str]) -> Iterator[Sequence[str]]:
    """Consecutive slices of at most CHUNK_INPUTS texts and about CHUNK_CHARS characters
    (a single longer text is a chunk of its own)."""
    start, size = 0, 0
    for index, text in enumerate(texts):
        if index > start and (index - start >= CHUNK_INPUTS or size + len(text) > CHUNK_CHARS):
            yield texts[start:index]
            start, size = index, 0
        size += len(text)
    if start < len(texts):
        yield texts[start:]


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
