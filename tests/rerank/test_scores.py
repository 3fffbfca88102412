"""Scores through the server equal hand-written references: the Qwen3-Reranker model card's
recipe on transformers, and sentence-transformers' own ``CrossEncoder.predict``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch
from sentence_transformers import CrossEncoder
from transformers import AutoModelForCausalLM, AutoTokenizer

QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Paris is the capital and most populous city of France.",
    "The cat sat quietly on the warm windowsill.",
    "Water boils at 100 degrees Celsius at sea level.",
    "北京是中国的首都。",
    "Interest rates were raised by a quarter of a percentage point.",
]
DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"


def qwen3_reference(
    path: Path, query: str, docs: list[str], task: str, max_length: int | None = None
) -> list[float]:
    """Qwen3-Reranker's model card, written out: one pair at a time (its truncation with
    ``max_length``)."""
    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    prefix = ("<|im_start|>system\nJudge whether the Document meets the requirements based on "
              "the Query and the Instruct provided. Note that the answer can only be \"yes\" or "
              "\"no\".<|im_end|>\n<|im_start|>user\n")  # fmt: skip
    suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    prefix_ids = tokenizer.encode(prefix, add_special_tokens=False)
    suffix_ids = tokenizer.encode(suffix, add_special_tokens=False)
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    scores = []
    for doc in docs:
        pair = f"<Instruct>: {task}\n<Query>: {query}\n<Document>: {doc}"
        room = None if max_length is None else max_length - len(prefix_ids) - len(suffix_ids)
        encoded = tokenizer(pair, truncation=room is not None, max_length=room)["input_ids"]
        ids = prefix_ids + encoded + suffix_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        two = torch.stack([logits[no], logits[yes]])
        scores.append(float(torch.softmax(two, dim=0)[1]))
    return scores


def by_index(body: dict[str, Any]) -> list[float]:
    return [r["relevance_score"] for r in sorted(body["results"], key=lambda r: r["index"])]


@pytest.mark.anyio
async def test_qwen3_scores_match_the_model_card_recipe(
    rerank_app: Any, tiny_reranker_dir: Path
) -> None:
    app = await rerank_app()
    response = await app.http.post(
        "/v1/rerank", json={"model": "qwen3-rerank", "query": QUERY, "documents": DOCUMENTS}
    )
    assert response.status_code == 200, response.text
    expected = qwen3_reference(tiny_reranker_dir, QUERY, DOCUMENTS, DEFAULT_TASK)
    assert by_index(response.json()) == pytest.approx(expected, abs=1e-5)
    assert max(expected) - min(expected) > 1e-3  # the scores tell documents apart

    task = "Find the passage about geography"
    custom = await app.http.post("/v1/rerank", json={
        "model": "qwen3-rerank", "query": QUERY, "documents": DOCUMENTS, "instruction": task,
    })  # fmt: skip
    expected = qwen3_reference(tiny_reranker_dir, QUERY, DOCUMENTS, task)
    assert by_index(custom.json()) == pytest.approx(expected, abs=1e-5)


@pytest.mark.anyio
async def test_cross_encoder_scores_match_predict(
    rerank_app: Any, tiny_cross_encoder_dir: Path
) -> None:
    app = await rerank_app()
    response = await app.http.post(
        "/v1/rerank", json={"model": "cross-alias", "query": QUERY, "documents": DOCUMENTS}
    )
    assert response.status_code == 200, response.text
    reference = CrossEncoder(str(tiny_cross_encoder_dir), device="cpu")
    expected = [float(s) for s in reference.predict([(QUERY, doc) for doc in DOCUMENTS])]
    assert response.json()["model"] == "cross"
    assert by_index(response.json()) == pytest.approx(expected, abs=1e-5)
    assert max(expected) - min(expected) > 1e-3


@pytest.mark.anyio
async def test_many_cross_encoder_pairs_are_tokenized_on_the_pool_the_same_way(
    rerank_app: Any, tiny_cross_encoder_dir: Path
) -> None:
    """150 documents: past the inline limit, encoded in chunks on the work pool's threads
    (each with its own tokenizer), in order, with the same ids as predict's."""
    documents = [f"{DOCUMENTS[i % len(DOCUMENTS)]} number {i}" for i in range(150)]
    app = await rerank_app()
    response = await app.http.post(
        "/v1/rerank", json={"model": "cross", "query": QUERY, "documents": documents}
    )
    assert response.status_code == 200, response.text
    reference = CrossEncoder(str(tiny_cross_encoder_dir), device="cpu")
    expected = [float(s) for s in reference.predict([(QUERY, doc) for doc in documents])]
    assert by_index(response.json()) == pytest.approx(expected, abs=1e-5)


@pytest.mark.anyio
async def test_pair_tokenizing_is_shared_fairly_between_tenants(
    tiny_cross_encoder_dir: Path,
) -> None:
    """One thread, a tenant with 20 chunks queued first: another tenant's one chunk is
    encoded after at most one of them, not after all 20."""
    from embedgate.engine.backends.rerank_prompts import PairEncoder

    encoder = PairEncoder(CrossEncoder(str(tiny_cross_encoder_dir)).tokenizer, "t", threads=1)
    done: list[str] = []

    async def run(tenant: str, count: int) -> None:
        await encoder(QUERY, DOCUMENTS * (count // len(DOCUMENTS)), None, tenant)
        done.append(tenant)

    try:
        heavy = asyncio.create_task(run("heavy", 64 * 20))
        await asyncio.sleep(0)  # its 20 chunks are queued first
        await run("light", 64)
        assert done == ["light"]  # before the heavy tenant's request finished
        await heavy
    finally:
        encoder.close()


@pytest.mark.anyio
async def test_cross_encoder_token_types_follow_the_pair_not_sep_ids(
    rerank_app: Any, tiny_cross_encoder_dir: Path
) -> None:
    """A query that spells [SEP] still has one segment: the token types come from the
    encoding (as predict's do), not from where a [SEP] id appears."""
    app = await rerank_app()
    query = "capital [SEP] of France"
    response = await app.http.post(
        "/v1/rerank", json={"model": "cross", "query": query, "documents": DOCUMENTS}
    )
    reference = CrossEncoder(str(tiny_cross_encoder_dir), device="cpu")
    expected = [float(s) for s in reference.predict([(query, doc) for doc in DOCUMENTS])]
    assert by_index(response.json()) == pytest.approx(expected, abs=1e-5)


@pytest.mark.anyio
async def test_concurrent_requests_share_batches_and_keep_their_scores(rerank_app: Any) -> None:
    """Requests batched together by the scheduler (padding, the express lane) score each
    pair as when it runs alone."""
    app = await rerank_app()

    async def one(model: str, docs: list[str]) -> list[float]:
        body = {"model": model, "query": QUERY, "documents": docs}
        response = await app.http.post("/v1/rerank", json=body)
        assert response.status_code == 200, response.text
        return by_index(response.json())

    for model in ("qwen3-rerank", "cross"):
        alone = [(await one(model, [doc]))[0] for doc in DOCUMENTS]
        together = await asyncio.gather(*(one(model, DOCUMENTS[i:]) for i in range(4)))
        for start, scores in enumerate(together):
            assert scores == pytest.approx(alone[start:], abs=1e-5)


LONG = "The quick brown fox jumps over the lazy dog. " * 120


@pytest.mark.anyio
async def test_truncation_follows_each_models_own_rule(
    rerank_app: Any, tiny_reranker_dir: Path, tiny_cross_encoder_dir: Path
) -> None:
    """With truncate_inputs on, a too-long pair is cut as the references cut it: Qwen3 the
    pair text to max_length - prefix - suffix; a CrossEncoder longest_first."""
    app = await rerank_app(truncate_inputs=True)
    docs = [LONG, DOCUMENTS[0]]
    body = {"model": "qwen3-rerank", "query": QUERY, "documents": docs}
    qwen3 = await app.http.post("/v1/rerank", json=body)
    assert qwen3.status_code == 200, qwen3.text
    expected = qwen3_reference(tiny_reranker_dir, QUERY, docs, DEFAULT_TASK, max_length=512)
    assert by_index(qwen3.json()) == pytest.approx(expected, abs=1e-5)

    cross = await app.http.post("/v1/rerank", json={**body, "model": "cross"})
    reference = CrossEncoder(str(tiny_cross_encoder_dir), device="cpu")
    assert reference.max_seq_length == 512
    expected = [float(s) for s in reference.predict([(QUERY, doc) for doc in docs])]
    assert by_index(cross.json()) == pytest.approx(expected, abs=1e-5)
