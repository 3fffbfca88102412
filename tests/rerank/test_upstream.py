"""/v1/rerank through upstream engines, one stand-in per engine's shape (vLLM, Infinity,
SGLang, TEI): real aiohttp servers on sockets that score with the tiny CrossEncoder, so
every shape must give the scores the same model gives in process.

Also: the Qwen3-Reranker prompt as each engine wants it, one request per query when pairs of
several queries travel together, the split of a large request, the engine's token counts,
fail-over, and the engine's errors in the OpenAI envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sentence_transformers import CrossEncoder

from embedgate.engine.backends.rerank_prompts import (
    QWEN3_RERANK_PREFIX,
    QWEN3_RERANK_SUFFIX,
    Qwen3Prompt,
)
from tests.conftest import AppClient
from tests.rerank.conftest import rerank_models
from tests.rerank.test_api import DOCUMENTS, QUERY, assert_error

pytestmark = pytest.mark.anyio

# engine -> (its path below the base URL, the base URL's own path)
SHAPES = {
    "vllm": ("/v1/rerank", "/v1"),
    "infinity": ("/rerank", ""),
    "sglang": ("/v1/rerank", "/v1"),
    "tei": ("/rerank", ""),
}
API = {"vllm": "cohere", "infinity": "cohere", "sglang": "sglang", "tei": "tei"}
Scorer = Callable[[str, list[str]], list[float]]


class Engine:
    """One stand-in engine: answers in its shape, remembers what it was sent."""

    def __init__(self, shape: str, scorer: Scorer) -> None:
        self.shape = shape
        self.scorer = scorer
        self.bodies: list[dict[str, Any]] = []
        self.fail: Callable[[], web.Response | None] = lambda: None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        failure = self.fail()
        if failure is not None:
            return failure
        await asyncio.sleep(0.01)  # long enough for concurrent requests to queue meanwhile
        texts = body["texts"] if self.shape == "tei" else body["documents"]
        scores = self.scorer(body["query"], texts)
        tokens = [len(body["query"].split()) + len(text.split()) for text in texts]
        order = sorted(range(len(texts)), key=lambda i: -scores[i])
        if self.shape == "vllm":
            results = [{"index": i, "document": {"text": texts[i]}, "relevance_score": scores[i]}
                       for i in order]  # fmt: skip
            return web.json_response({"id": "rerank-1", "model": body["model"],
                                      "usage": {"total_tokens": sum(tokens)},
                                      "results": results})  # fmt: skip
        if self.shape == "infinity":
            results = [{"relevance_score": scores[i], "index": i, "document": texts[i]}
                       for i in order]  # fmt: skip
            return web.json_response({"object": "rerank", "results": results, "model": "m",
                                      "usage": {"prompt_tokens": sum(tokens),
                                                "total_tokens": sum(tokens)},
                                      "id": "x", "created": 1})  # fmt: skip
        if self.shape == "sglang":
            return web.json_response([{"score": scores[i], "document": texts[i], "index": i,
                                       "meta_info": {"prompt_tokens": tokens[i]}}
                                      for i in order])  # fmt: skip
        return web.json_response([{"index": i, "score": scores[i]} for i in order])


@contextlib.asynccontextmanager
async def engines(scorer: Scorer, shapes: list[str]) -> AsyncIterator[list[Engine]]:
    async with contextlib.AsyncExitStack() as stack:
        started = []
        for shape in shapes:
            engine = Engine(shape, scorer)
            app = web.Application()
            app.router.add_post(SHAPES[shape][0], engine.handle)
            server = TestServer(app, host="127.0.0.1")
            await stack.enter_async_context(server)
            engine.url = str(server.make_url(SHAPES[shape][1])).rstrip("/")
            started.append(engine)
        yield started


@pytest.fixture(scope="module")
def cross_encoder(tiny_cross_encoder_dir: Path) -> CrossEncoder:
    return CrossEncoder(str(tiny_cross_encoder_dir), device="cpu")


@pytest.fixture
def scorer(cross_encoder: CrossEncoder) -> Scorer:
    def score(query: str, texts: list[str]) -> list[float]:
        return [float(s) for s in cross_encoder.predict([(query, text) for text in texts])]

    return score


def upstream(engine: Engine, **fields: Any) -> dict[str, Any]:
    return {"backend": "openai", "task": "rerank", "base_urls": [engine.url],
            "rerank_api": API[engine.shape], **fields}  # fmt: skip


@pytest.fixture
def start(
    rerank_app: Callable[..., Awaitable[AppClient]],
    tiny_reranker_dir: Path,
    tiny_cross_encoder_dir: Path,
) -> Callable[..., Awaitable[AppClient]]:
    async def open_app(**upstreams: dict[str, Any]) -> AppClient:
        models = {**rerank_models(tiny_reranker_dir, tiny_cross_encoder_dir), **upstreams}
        return await rerank_app(models=models)

    return open_app


async def rerank(app: AppClient, model: str, **body: Any) -> Any:
    payload = {"model": model, "query": QUERY, "documents": DOCUMENTS, **body}
    return await app.http.post("/v1/rerank", json=payload)


async def test_every_engine_shape_gives_the_in_process_scores(
    start: Callable[..., Awaitable[AppClient]], scorer: Scorer
) -> None:
    async with engines(scorer, list(SHAPES)) as started:
        app = await start(**{e.shape: upstream(e) for e in started})
        local = (await rerank(app, "cross")).json()["results"]
        for engine in started:
            response = await rerank(app, engine.shape, return_documents=True)
            assert response.status_code == 200, (engine.shape, response.text)
            results = response.json()["results"]
            assert [r["index"] for r in results] == [r["index"] for r in local], engine.shape
            for got, want in zip(results, local, strict=True):
                assert got["relevance_score"] == pytest.approx(want["relevance_score"], abs=1e-5)
                assert got["document"] == {"text": DOCUMENTS[got["index"]]}
            (sent,) = engine.bodies
            assert "top_n" not in sent  # every score is needed
            if engine.shape == "tei":
                assert sent == {"query": QUERY, "texts": DOCUMENTS, "raw_scores": False,
                                "return_text": False}  # fmt: skip
            else:
                assert (sent["model"], sent["query"], sent["documents"]) == (
                    engine.shape, QUERY, DOCUMENTS)  # fmt: skip
        models = (await app.http.get("/v1/models")).json()["data"]
        assert {m["id"]: m["task"] for m in models}["tei"] == "rerank"


async def test_the_engines_token_counts_are_the_usage(
    start: Callable[..., Awaitable[AppClient]], scorer: Scorer
) -> None:
    words = sum(len(QUERY.split()) + len(doc.split()) for doc in DOCUMENTS)
    async with engines(scorer, ["vllm", "infinity", "sglang", "tei"]) as started:
        app = await start(**{e.shape: upstream(e) for e in started})
        for engine in started:
            usage = (await rerank(app, engine.shape)).json()["usage"]["total_tokens"]
            if engine.shape == "tei":  # TEI reports none: embedgate's estimate
                estimate = sum(max(1, len(QUERY) // 4) + max(1, len(d) // 4) for d in DOCUMENTS)
                assert usage == estimate
            else:
                assert usage == words, engine.shape


async def test_qwen3_gets_the_model_card_prompt_in_each_engines_way(
    start: Callable[..., Awaitable[AppClient]], tiny_reranker_dir: Path
) -> None:
    def constant(query: str, texts: list[str]) -> list[float]:
        return [0.5 + i / 100 for i in range(len(texts))]

    async with engines(constant, ["vllm", "sglang", "tei"]) as started:
        app = await start(**{e.shape: upstream(e, family="qwen3") for e in started})
        task = "Find the passage that names a capital"
        for engine in started:
            response = await rerank(app, engine.shape, instruction=task)
            assert response.status_code == 200, response.text
            assert [r["index"] for r in response.json()["results"]] == [3, 2, 1, 0]
        vllm, sglang, tei = (engine.bodies[0] for engine in started)
        for sent, texts in ((vllm, vllm["documents"]), (tei, tei["texts"])):
            for doc, text in zip(DOCUMENTS, texts, strict=True):
                whole = Qwen3Prompt.pair(task, QUERY, doc)
                assert sent["query"] + text == QWEN3_RERANK_PREFIX + whole + QWEN3_RERANK_SUFFIX
        # SGLang formats the prompt itself (its chat template): raw texts, the instruction apart
        assert (sglang["query"], sglang["documents"], sglang["instruct"]) == (
            QUERY, DOCUMENTS, task)  # fmt: skip
        # the default instruction where the request names none, as in process
        await rerank(app, "sglang")
        assert started[1].bodies[1]["instruct"].startswith("Given a web search query")


async def test_a_cross_encoder_upstream_refuses_instructions(
    start: Callable[..., Awaitable[AppClient]], scorer: Scorer
) -> None:
    async with engines(scorer, ["vllm"]) as (engine,):
        app = await start(vllm=upstream(engine))
        response = await rerank(app, "vllm", instruction="rank them")
        assert_error(response, 400, "instruction_not_supported", "instruction")
        assert engine.bodies == []


async def test_pairs_of_several_queries_travel_as_one_request_per_query(
    start: Callable[..., Awaitable[AppClient]], scorer: Scorer
) -> None:
    async with engines(scorer, ["vllm"]) as (engine,):
        app = await start(vllm=upstream(engine, max_batch_size=2))
        queries = [f"question number {i} about {w}" for i, w in enumerate(["cats", "rain", "tax"])]
        answers = await asyncio.gather(*(rerank(app, "vllm", query=q) for q in queries))
        for query, answer in zip(queries, answers, strict=True):
            assert answer.status_code == 200, answer.text
            scores = scorer(query, DOCUMENTS)
            best = sorted(range(len(DOCUMENTS)), key=lambda i: -scores[i])
            assert [r["index"] for r in answer.json()["results"]] == best
        # 4 documents in upstream requests of at most 2: each query's pairs in 2 requests
        assert all(len(body["documents"]) <= 2 for body in engine.bodies)
        for query in queries:
            sent = [doc for body in engine.bodies if body["query"] == query
                    for doc in body["documents"]]  # fmt: skip
            assert sorted(sent) == sorted(DOCUMENTS)


async def test_a_refusing_engine_fails_over_to_the_next(
    start: Callable[..., Awaitable[AppClient]], scorer: Scorer
) -> None:
    async with engines(scorer, ["tei", "tei"]) as (busy, idle):
        busy.fail = lambda: web.json_response({"error": "overloaded"}, status=503)
        spec = upstream(busy, base_urls=[busy.url, idle.url])
        app = await start(tei=spec)
        for _ in range(3):
            response = await rerank(app, "tei")
            assert response.status_code == 200, response.text
        assert len(idle.bodies) == 3


@pytest.mark.parametrize(
    ("answer", "status", "code", "words"),
    [
        (
            lambda: web.json_response(
                {"error": "Input validation error: too long", "error_type": "Validation"},
                status=422,
            ),
            400,
            "upstream_rejected",
            "Input validation error: too long",
        ),
        (
            lambda: web.json_response([{"index": 0, "score": 0.5}]),
            502,
            "upstream_error",
            "malformed rerank response",
        ),
        (
            lambda: web.json_response([{"index": 9, "score": 0.5}] * 4),
            502,
            "upstream_error",
            "malformed rerank response",
        ),
        (
            lambda: web.json_response({"error": "no"}, status=401),
            502,
            "upstream_auth_error",
            "credentials",
        ),
    ],
)
async def test_engine_errors_are_openai_errors(
    start: Callable[..., Awaitable[AppClient]], scorer: Scorer,
    answer: Callable[[], web.Response], status: int, code: str, words: str,
) -> None:  # fmt: skip
    async with engines(scorer, ["tei"]) as (engine,):
        engine.fail = answer
        app = await start(tei=upstream(engine))
        response = await rerank(app, "tei")
        message = assert_error(response, status, code, "documents" if status == 400 else None)
        assert words in message


def test_upstream_rerank_config_rules() -> None:
    from pydantic import TypeAdapter, ValidationError

    from embedgate.config.models import ModelSpec

    adapter: TypeAdapter[Any] = TypeAdapter(ModelSpec)
    spec = adapter.validate_python({"backend": "openai", "task": "rerank",
                                    "base_urls": ["http://e/v1"]})  # fmt: skip
    assert (spec.dimensions, spec.rerank_api) == (1, "cohere")
    for wrong, words in (
        ({"task": "rerank", "dimensions": 768}, "one score per pair"),
        ({"dimensions": 768, "rerank_api": "tei"}, "task: rerank"),
        ({"task": "rerank", "rerank_api": "jina"}, "cohere"),
    ):
        with pytest.raises(ValidationError, match=words):
            adapter.validate_python({"backend": "openai", "base_urls": ["http://e/v1"], **wrong})
