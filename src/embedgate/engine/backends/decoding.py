"""Token ids back to text, for the blocked-terms check of token-id inputs (services/policy).

On a thread of its own with a private copy of the tokenizer: Rust tokenizers must not be
shared between threads, and decoding a large request must not hold up the event loop.
Special tokens are skipped, so ``[CLS] sec ##ret [SEP]`` reads ``secret``, as it embeds.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tokenizers import Tokenizer


class TokenDecoder:
    def __init__(self, tokenizer: Any, name: str) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._rust = Tokenizer.from_str(backend.to_str()) if backend is not None else None
        self._hf = copy.deepcopy(tokenizer) if backend is None else None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"embedgate-decode-{name}")

    async def __call__(self, id_lists: Sequence[Sequence[int]]) -> list[str]:
        lists = [list(ids) for ids in id_lists]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._decode, lists)

    def _decode(self, id_lists: list[list[int]]) -> list[str]:
        if self._rust is not None:
            return self._rust.decode_batch(id_lists, skip_special_tokens=True)
        return list(self._hf.batch_decode(id_lists, skip_special_tokens=True))  # type: ignore[union-attr]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
