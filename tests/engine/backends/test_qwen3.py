"""Qwen3-Embedding rules, proven on a tiny random Qwen3 model built by the tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from embedgate.config.models import LocalModel
from tests.conftest import AppClient

pytestmark = pytest.mark.anyio

TASK = "Given a question, retrieve passages that answer it"
QUERIES = ["what is the capital of France?", "how do vaccines work", "向量检索"]


def reference(path: Path, texts: list[str], pooling: str = "last") -> np.ndarray:
    """Qwen3-Embedding's published recipe, by hand: left padding, last token, L2 norm."""
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModel.from_pretrained(path).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    if pooling == "last":
        pooled = hidden[:, -1]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def matrix(response: Any) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray([row["embedding"] for row in response.json()["data"]], dtype=np.float32)


async def qwen3_app(app_factory: Any, path: Path, **spec: Any) -> AppClient:
    model = LocalModel(path=str(path), **spec)
    app: AppClient = await app_factory(
        models={"tiny-qwen3": model}, default_model="tiny-qwen3", warmup=False
    )
    return app


async def test_documents_get_no_instruction(app_factory: Any, tiny_qwen3_dir: Path) -> None:
    app = await qwen3_app(app_factory, tiny_qwen3_dir)
    got = matrix(await app.http.post("/v1/embeddings", json={"input": QUERIES}))
    np.testing.assert_allclose(got, reference(tiny_qwen3_dir, QUERIES), atol=1e-5)


async def test_queries_get_the_instruction_prompt(app_factory: Any, tiny_qwen3_dir: Path) -> None:
    app = await qwen3_app(app_factory, tiny_qwen3_dir)
    body = {"input": QUERIES, "instruction": TASK}
    got = matrix(await app.http.post("/v1/embeddings", json=body))
    prompted = [f"Instruct: {TASK}\nQuery:{q}" for q in QUERIES]  # no space after Query:
    np.testing.assert_allclose(got, reference(tiny_qwen3_dir, prompted), atol=1e-5)
    assert not np.allclose(got, reference(tiny_qwen3_dir, QUERIES), atol=1e-3)
    usage = (await app.http.post("/v1/embeddings", json=body)).json()["usage"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_dir)
    assert usage["prompt_tokens"] == sum(len(tokenizer(p)["input_ids"]) for p in prompted)


async def test_last_token_pooling_even_if_the_folder_says_mean(
    app_factory: Any, tiny_qwen3_dir: Path, tmp_path: Path
) -> None:
    misconfigured = tmp_path / "mean-pooled-qwen3"
    shutil.copytree(tiny_qwen3_dir, misconfigured)
    pooling = misconfigured / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update({"pooling_mode_lasttoken": False, "pooling_mode_mean_tokens": True})
    pooling.write_text(json.dumps(config))
    app = await qwen3_app(app_factory, misconfigured)
    got = matrix(await app.http.post("/v1/embeddings", json={"input": QUERIES}))
    np.testing.assert_allclose(got, reference(tiny_qwen3_dir, QUERIES), atol=1e-5)
    assert not np.allclose(got, reference(tiny_qwen3_dir, QUERIES, pooling="mean"), atol=1e-3)


async def test_left_padding_keeps_batches_equal_to_singles(
    app_factory: Any, tiny_qwen3_dir: Path
) -> None:
    app = await qwen3_app(app_factory, tiny_qwen3_dir)
    texts = ["a", "a somewhat longer text " * 5, "mid length text here"]
    batch = matrix(await app.http.post("/v1/embeddings", json={"input": texts}))
    singles = np.vstack(
        [matrix(await app.http.post("/v1/embeddings", json={"input": t})) for t in texts]
    )
    np.testing.assert_allclose(batch, singles, atol=1e-5)


async def test_dimensions_truncate_renormalise_and_range(
    app_factory: Any, tiny_qwen3_dir: Path
) -> None:
    app = await qwen3_app(app_factory, tiny_qwen3_dir)
    body = {"input": QUERIES, "instruction": TASK}
    full = matrix(await app.http.post("/v1/embeddings", json=body))
    short = matrix(await app.http.post("/v1/embeddings", json={**body, "dimensions": 32}))
    expected = full[:, :32] / np.linalg.norm(full[:, :32], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-6)
    for bad in (31, 65):
        response = await app.http.post("/v1/embeddings", json={**body, "dimensions": bad})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "dimensions"
        assert "between 32 and 64" in response.json()["error"]["message"]
    exact = await app.http.post("/v1/embeddings", json={**body, "dimensions": 64})
    np.testing.assert_allclose(matrix(exact), full, atol=1e-7)


async def test_instruction_rules(app_factory: Any, tiny_qwen3_dir: Path) -> None:
    app = await qwen3_app(app_factory, tiny_qwen3_dir)
    empty = await app.http.post("/v1/embeddings", json={"input": "x", "instruction": "  "})
    assert empty.status_code == 400
    assert empty.json()["error"]["param"] == "instruction"
    tokens = await app.http.post("/v1/embeddings", json={"input": [5, 6, 7], "instruction": TASK})
    assert tokens.status_code == 400
    assert tokens.json()["error"]["param"] == "instruction"
    (model,) = (await app.http.get("/v1/models")).json()["data"]
    assert model["instructions"] is True
    assert model["dimensions"] == 64
    assert model["max_tokens"] == 512  # the model's own limit


async def test_qwen3_rules_can_be_forced_on_a_generic_folder(
    app_factory: Any, tiny_qwen3_dir: Path
) -> None:
    app = await qwen3_app(app_factory, tiny_qwen3_dir, family="qwen3", aliases=["q3"])
    response = await app.http.post(
        "/v1/embeddings", json={"input": QUERIES, "model": "q3", "instruction": TASK}
    )
    prompted = [f"Instruct: {TASK}\nQuery:{q}" for q in QUERIES]
    np.testing.assert_allclose(matrix(response), reference(tiny_qwen3_dir, prompted), atol=1e-5)
    assert response.json()["model"] == "tiny-qwen3"
