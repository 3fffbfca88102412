"""The rerank clients people already use, unchanged, pointed at a real `embedgate serve`:
Cohere's SDK (v1 and v2 clients, which post to `/v1/rerank` and `/v2/rerank`), LangChain's
`CohereRerank` and LlamaIndex's `CohereRerank` and `JinaRerank` (which posts to
`<base_url>/rerank`). Each must get the ranking and the scores of the model itself."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cohere
import httpx
import pytest
import yaml
from langchain_cohere import CohereRerank as LangChainCohereRerank
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.cohere_rerank import CohereRerank as LlamaCohereRerank
from llama_index.postprocessor.jinaai_rerank import JinaRerank
from sentence_transformers import CrossEncoder

from tests.conftest import ADMIN_KEY, issue_key
from tests.helpers import start_server
from tests.rerank.conftest import rerank_models
from tests.rerank.test_scores import DEFAULT_TASK, qwen3_reference

QUERY = "how do vaccines train the immune system?"
DOCUMENTS = [
    "Vaccines expose the immune system to a harmless piece of a pathogen.",
    "The museum opens at nine o'clock every morning except Monday.",
    "Photosynthesis converts sunlight, water and carbon dioxide into sugar.",
    "Antibodies made after a vaccination remember the shape of the virus.",
    "A sourdough starter needs flour, water and a few days of patience.",
]
TOP_N = 3


@dataclass(frozen=True)
class Served:
    url: str
    key: str
    best: list[int]  # the model's own ranking, best first, TOP_N of them
    scores: list[float]  # the model's own score of each document
    qwen3: Path  # the tiny Qwen3-Reranker's folder


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_cross_encoder_dir: Path,
           tiny_reranker_dir: Path) -> Iterator[Served]:  # fmt: skip
    root = tmp_path_factory.mktemp("clients")
    config = root / "embedgate.yaml"
    config.write_text(yaml.safe_dump(
        {"models": rerank_models(tiny_reranker_dir, tiny_cross_encoder_dir)}))  # fmt: skip
    env = {"EMBEDGATE_ADMIN_KEY": ADMIN_KEY, "EMBEDGATE_CONFIG": str(config),
           "EMBEDGATE_WARMUP": "false"}  # fmt: skip
    reference = CrossEncoder(str(tiny_cross_encoder_dir), device="cpu")
    scores = [float(s) for s in reference.predict([(QUERY, doc) for doc in DOCUMENTS])]
    best = sorted(range(len(DOCUMENTS)), key=lambda i: -scores[i])[:TOP_N]
    with start_server(root / "data", env=env) as server:
        yield Served(server.url, issue_key(server.url), best, scores, tiny_reranker_dir)


def assert_model_ranking(served: Served, indexes: list[int], scores: list[float]) -> None:
    assert indexes == served.best
    assert scores == pytest.approx([served.scores[i] for i in indexes], abs=1e-4)


def test_cohere_sdk_v2(served: Served) -> None:
    client = cohere.ClientV2(api_key=served.key, base_url=served.url)  # posts /v2/rerank
    answer = client.rerank(model="cross", query=QUERY, documents=DOCUMENTS, top_n=TOP_N)
    assert_model_ranking(served, [r.index for r in answer.results],
                         [r.relevance_score for r in answer.results])  # fmt: skip
    assert answer.id


def test_qwen3_reranker_on_the_served_process(served: Served) -> None:
    """The tiny Qwen3-Reranker over a socket: the model card's scores, the default
    instruction through the SDK and an own one through the `instruction` extension."""
    client = cohere.ClientV2(api_key=served.key, base_url=served.url)
    answer = client.rerank(model="qwen3-rerank", query=QUERY, documents=DOCUMENTS)
    expected = qwen3_reference(served.qwen3, QUERY, DOCUMENTS, DEFAULT_TASK)
    assert [r.index for r in answer.results] == sorted(range(len(DOCUMENTS)),
                                                        key=lambda i: -expected[i])  # fmt: skip
    assert [r.relevance_score for r in answer.results] == pytest.approx(
        [expected[r.index] for r in answer.results], abs=1e-4)  # fmt: skip
    task = "Given a question, find passages about medicine"
    body = {"model": "qwen3-rerank", "query": QUERY, "documents": DOCUMENTS, "instruction": task}
    own = httpx.post(f"{served.url}/rerank", json=body, timeout=60,
                     headers={"Authorization": f"Bearer {served.key}"})  # fmt: skip
    assert own.status_code == 200, own.text
    scores = [r["relevance_score"] for r in sorted(own.json()["results"], key=lambda r: r["index"])]
    assert scores == pytest.approx(qwen3_reference(served.qwen3, QUERY, DOCUMENTS, task), abs=1e-4)


def test_cohere_sdk_v1(served: Served) -> None:
    client = cohere.Client(api_key=served.key, base_url=served.url)  # posts /v1/rerank
    answer = client.rerank(model="cross", query=QUERY, documents=DOCUMENTS, top_n=TOP_N,
                           return_documents=True)  # fmt: skip
    assert_model_ranking(served, [r.index for r in answer.results],
                         [r.relevance_score for r in answer.results])  # fmt: skip
    assert [r.document.text for r in answer.results if r.document] == [
        DOCUMENTS[i] for i in served.best
    ]


def test_cohere_sdk_errors_are_its_own_exceptions(served: Served) -> None:
    client = cohere.ClientV2(api_key=served.key, base_url=served.url)
    with pytest.raises(cohere.errors.BadRequestError) as refused:
        client.rerank(model="cross", query=QUERY, documents=[])
    assert refused.value.body["error"]["param"] == "documents"
    with pytest.raises(cohere.errors.UnauthorizedError):
        cohere.ClientV2(api_key="nope", base_url=served.url).rerank(
            model="cross", query=QUERY, documents=DOCUMENTS
        )


def test_langchain_cohere_rerank(served: Served) -> None:
    reranker = LangChainCohereRerank(cohere_api_key=served.key, base_url=served.url,
                                     model="cross", top_n=TOP_N)  # fmt: skip
    documents = [Document(page_content=text, metadata={"n": i}) for i, text in enumerate(DOCUMENTS)]
    compressed = reranker.compress_documents(documents, QUERY)
    assert_model_ranking(served, [d.metadata["n"] for d in compressed],
                         [d.metadata["relevance_score"] for d in compressed])  # fmt: skip


def nodes() -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(text=text, id_=f"n{i}"), score=0.0)
            for i, text in enumerate(DOCUMENTS)]  # fmt: skip


def ranked(reranked: list[NodeWithScore]) -> tuple[list[int], list[float]]:
    return [int(n.node.node_id[1:]) for n in reranked], [float(n.score or 0) for n in reranked]


def test_llama_index_cohere_rerank(served: Served) -> None:
    reranker = LlamaCohereRerank(api_key=served.key, base_url=served.url, model="cross",
                                 top_n=TOP_N)  # fmt: skip
    reranked = reranker.postprocess_nodes(nodes(), query_bundle=QueryBundle(QUERY))
    assert_model_ranking(served, *ranked(reranked))


def test_llama_index_jina_rerank(served: Served) -> None:
    reranker = JinaRerank(api_key=served.key, base_url=f"{served.url}/v1", model="cross",
                          top_n=TOP_N)  # fmt: skip
    reranked = reranker.postprocess_nodes(nodes(), query_bundle=QueryBundle(QUERY))
    assert_model_ranking(served, *ranked(reranked))


def test_the_clients_requests_are_metered_as_rerank(served: Served) -> None:
    """Whatever route a client took, its usage is reranking (and nothing it sent is kept)."""
    client = cohere.ClientV2(api_key=served.key, base_url=served.url)
    client.rerank(model="cross", query=QUERY, documents=DOCUMENTS)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    report = httpx.get(f"{served.url}/admin/usage", headers=admin, timeout=30).json()["data"]
    assert sum(row["rerank_requests"] for row in report) >= 1
    assert sum(row["tokens"] - row["rerank_tokens"] for row in report) == 0  # nothing embedded
