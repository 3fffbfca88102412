"""POST /v1/rerank over HTTP in-process: the Cohere/Jina shape, its aliases, every error in
the OpenAI envelope, the plan's rules and metering."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, INVALID_KEY_BODY, AppClient
from tests.rerank.conftest import rerank_models

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Paris is the capital and most populous city of France.",
    "The cat sat quietly on the warm windowsill.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Fresh vegetables are sold at the market every Saturday.",
]


def rerank(app: AppClient, path: str = "/v1/rerank", **body: Any) -> Any:
    payload = {"model": "qwen3-rerank", "query": QUERY, "documents": DOCUMENTS, **body}
    return app.http.post(path, json=payload)


def assert_error(response: httpx.Response, status: int, code: str, param: str | None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param)
    return str(error["message"])


async def tenant_client(
    app: AppClient, tenant: str, policy: dict[str, Any], **key: Any
) -> httpx.AsyncClient:
    """A client carrying a key (``key``: its fields) of a new tenant with this policy."""
    created = await app.http.post(
        "/admin/tenants", json={"id": tenant, "policy": policy}, headers=ADMIN
    )
    assert created.status_code in (200, 201), created.text
    issued = await app.http.post(f"/admin/tenants/{tenant}/keys", json=key, headers=ADMIN)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.app), base_url="http://embedgate.test",
        headers={"Authorization": f"Bearer {issued.json()['key']}"},
    )  # fmt: skip


async def test_results_are_sorted_and_cut_to_top_n(rerank_app: Any) -> None:
    app = await rerank_app()
    full = (await rerank(app)).json()
    assert set(full) == {"id", "model", "results", "usage"}
    assert full["model"] == "qwen3-rerank"
    assert full["id"].startswith("req_")
    scores = [r["relevance_score"] for r in full["results"]]
    assert sorted(r["index"] for r in full["results"]) == list(range(len(DOCUMENTS)))
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert all("document" not in r for r in full["results"])
    assert full["usage"]["total_tokens"] > 0

    top = (await rerank(app, top_n=2, return_documents=True)).json()
    assert [r["index"] for r in top["results"]] == [r["index"] for r in full["results"][:2]]
    for result in top["results"]:
        assert result["document"] == {"text": DOCUMENTS[result["index"]]}
    assert top["usage"] == full["usage"]  # every pair was scored: top_n cuts the answer only


async def test_aliases_and_object_documents_answer_the_same(rerank_app: Any) -> None:
    app = await rerank_app()
    expected = (await rerank(app)).json()["results"]
    objects = [{"text": doc} for doc in DOCUMENTS]
    for path in ("/rerank", "/v2/rerank"):
        response = await rerank(app, path, documents=objects)
        assert response.status_code == 200, response.text
        assert response.json()["results"] == pytest.approx(expected)


async def test_model_defaults_to_the_first_rerank_model(rerank_app: Any) -> None:
    app = await rerank_app()
    response = await app.http.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS})
    assert response.json()["model"] == "qwen3-rerank"


async def test_invalid_bodies(rerank_app: Any) -> None:
    app = await rerank_app()
    assert_error(await rerank(app, documents=[]), 400, "invalid_value", "documents")
    assert_error(await rerank(app, documents=["ok", ""]), 400, "invalid_value", "documents")
    assert_error(await rerank(app, documents=[{"txt": "x"}]), 400, "invalid_value", "documents")
    assert_error(await rerank(app, documents="one"), 400, "invalid_value", "documents")
    assert_error(await rerank(app, query=""), 400, "invalid_value", "query")
    assert_error(await rerank(app, top_n=0), 400, "invalid_value", "top_n")
    assert_error(await rerank(app, return_documents="yes"), 400, "invalid_value",
                 "return_documents")  # fmt: skip
    missing = await app.http.post("/v1/rerank", json={"documents": ["a"]})
    assert_error(missing, 400, "invalid_value", "query")
    garbage = await app.http.post("/v1/rerank", content=b"{not json")
    assert garbage.status_code == 400
    assert "error" in garbage.json()


async def test_too_many_documents_server_and_plan(rerank_app: Any) -> None:
    app = await rerank_app(max_rerank_documents=3)
    message = assert_error(await rerank(app), 400, "invalid_value", "documents")
    assert "at most 3" in message
    assert (await rerank(app, documents=DOCUMENTS[:3])).status_code == 200
    limited = await tenant_client(app, "small-plan", {"max_documents_per_rerank": 2})
    async with limited:
        payload = {"model": "qwen3-rerank", "query": QUERY, "documents": DOCUMENTS[:3]}
        message = assert_error(await limited.post("/v1/rerank", json=payload), 400,
                               "invalid_value", "documents")  # fmt: skip
        assert "Your plan allows at most 2" in message


async def test_too_long_pairs_are_refused_or_truncated(rerank_app: Any) -> None:
    long_doc = "The quick brown fox jumps over the lazy dog. " * 200
    refused = await rerank_app()
    for model in ("qwen3-rerank", "cross"):
        response = await rerank(refused, model=model, documents=["short", long_doc])
        message = assert_error(response, 400, "context_length_exceeded", "documents")
        assert "documents[1]" in message
    truncating = await rerank_app(truncate_inputs=True)
    for model in ("qwen3-rerank", "cross"):
        response = await rerank(truncating, model=model, documents=["short", long_doc])
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["total_tokens"] <= 2 * 512


async def test_unknown_model_and_wrong_task(rerank_app: Any) -> None:
    app = await rerank_app()
    assert_error(await rerank(app, model="nope"), 404, "model_not_found", "model")
    message = assert_error(await rerank(app, model="all-minilm-l6-v2"), 400,
                           "wrong_model_task", "model")  # fmt: skip
    assert "/v1/embeddings" in message
    embed = await app.http.post("/v1/embeddings", json={"model": "cross", "input": "x"})
    assert "/v1/rerank" in assert_error(embed, 400, "wrong_model_task", "model")


async def test_instructions(rerank_app: Any) -> None:
    app = await rerank_app()
    assert_error(await rerank(app, model="cross", instruction="task"), 400,
                 "instruction_not_supported", "instruction")  # fmt: skip
    assert_error(await rerank(app, instruction="  "), 400, "invalid_value", "instruction")
    plain = (await rerank(app)).json()["results"]
    other = (await rerank(app, instruction="Find recipes")).json()["results"]
    assert plain != other  # the instruction reaches the model


async def test_auth_and_allowed_models(rerank_app: Any) -> None:
    app = await rerank_app()
    anonymous = await app.http.post("/v1/rerank", json={"query": "q", "documents": ["d"]},
                                    headers={"Authorization": ""})  # fmt: skip
    assert anonymous.status_code == 401
    assert anonymous.json() == INVALID_KEY_BODY
    limited = await tenant_client(app, "embed-only", {"allowed_models": ["all-minilm-l6-v2"]})
    async with limited:
        payload = {"model": "qwen3-rerank", "query": QUERY, "documents": DOCUMENTS}
        denied = await limited.post("/v1/rerank", json=payload)
        assert_error(denied, 403, "model_not_allowed", "model")
        listed = (await limited.get("/v1/models")).json()["data"]
        assert [m["id"] for m in listed] == ["all-minilm-l6-v2"]
        unnamed = await limited.post("/v1/rerank", json={"query": QUERY, "documents": ["d"]})
        assert_error(unnamed, 403, "model_not_allowed", "model")  # none it may use: named
    tasks = {m["id"]: m["task"] for m in (await app.http.get("/v1/models")).json()["data"]}
    assert tasks == {"all-minilm-l6-v2": "embed", "qwen3-rerank": "rerank", "cross": "rerank"}
    # without `model`: the first rerank model the plan allows, not the first configured
    cross_only = await tenant_client(app, "cross-only", {"allowed_models": ["cross"]})
    async with cross_only:
        answer = await cross_only.post("/v1/rerank", json={"query": QUERY, "documents": ["d"]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "cross"


async def test_blocked_terms_apply_to_query_and_documents(rerank_app: Any) -> None:
    app = await rerank_app()
    limited = await tenant_client(app, "blocking", {"blocked_terms": ["forbidden"]})
    async with limited:
        for body in ({"query": "a forbidden query", "documents": ["d"]},
                     {"query": "q", "documents": ["ok", "Forbidden text"]}):  # fmt: skip
            response = await limited.post("/v1/rerank", json={"model": "cross", **body})
            assert_error(response, 403, "content_blocked", "input")


async def test_usage_is_metered_under_the_rerank_route(rerank_app: Any) -> None:
    app = await rerank_app()
    body = (await rerank(app, path="/v1/rerank")).json()
    await rerank(app, path="/v2/rerank", model="cross")
    usage = app.app.state.runtime.control.usage
    await usage.flush()
    database = app.app.state.runtime.settings.data_dir / "embedgate.db"
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT route, model, inputs, tokens, status FROM usage_records "
            "WHERE route LIKE '%rerank' ORDER BY id"
        ).fetchall()
    assert rows[0] == ("/v1/rerank", "qwen3-rerank", len(DOCUMENTS),
                       body["usage"]["total_tokens"], 200)  # fmt: skip
    assert rows[1][:3] == ("/v2/rerank", "cross", len(DOCUMENTS))


async def test_a_collection_needs_an_embedding_model(rerank_app: Any) -> None:
    app = await rerank_app()
    response = await app.http.post("/v1/collections", json={"name": "kb", "model": "cross"})
    assert_error(response, 400, "wrong_model_task", "model")
    assert (await app.http.post("/v1/collections", json={"name": "kb"})).status_code == 201


async def test_large_bodies_and_the_character_cap(rerank_app: Any) -> None:
    app = await rerank_app(max_request_chars=100_000)
    docs = [f"{i} {DOCUMENTS[i % len(DOCUMENTS)]} " * 8 for i in range(200)]  # over 64 KiB
    response = await rerank(app, model="cross", documents=docs, top_n=3)
    assert response.status_code == 200, response.text  # parsed on the parse pool
    assert len(response.json()["results"]) == 3
    over = await rerank(app, model="cross", documents=[{"text": "x" * 60_000}] * 2)
    assert "100000" in assert_error(over, 400, "input_too_large", "documents")


async def test_pairs_count_against_the_token_quota(rerank_app: Any) -> None:
    """A rerank request costs its pairs' tokens: the same quota as embeddings spends."""
    app = await rerank_app()
    cost = (await rerank(app, model="cross")).json()["usage"]["total_tokens"]
    limited = await tenant_client(app, "quota", {"monthly_token_quota": 2 * cost + cost // 2})
    async with limited:
        payload = {"model": "cross", "query": QUERY, "documents": DOCUMENTS}
        for _ in range(2):
            assert (await limited.post("/v1/rerank", json=payload)).status_code == 200
        refused = await limited.post("/v1/rerank", json=payload)  # half a request is left
        assert_error(refused, 429, "insufficient_quota", None)
        me = (await limited.get("/v1/me")).json()
        assert me["usage"]["tokens"] == 2 * cost


async def test_documents_never_exceed_what_the_queue_holds(rerank_app: Any) -> None:
    app = await rerank_app(max_queue_inputs=3, max_inputs_per_request=3)
    assert "at most 3" in assert_error(await rerank(app), 400, "invalid_value", "documents")
    assert (await rerank(app, documents=DOCUMENTS[:3])).status_code == 200


async def test_instructions_setting_of_rerank_models(
    rerank_app: Any, tiny_reranker_dir: Any, tiny_cross_encoder_dir: Any
) -> None:
    """`instructions: false` turns a Qwen3 reranker's off; a CrossEncoder never takes one
    (it has nowhere to put it), whatever the entry says."""
    models = {
        "all-minilm-l6-v2": {"backend": "local", "path": "bundled:all-minilm-l6-v2"},
        "qwen3-rerank": {"backend": "local", "path": str(tiny_reranker_dir), "task": "rerank",
                         "instructions": False},
        "cross": {"backend": "local", "path": str(tiny_cross_encoder_dir), "task": "rerank",
                  "instructions": True},
    }  # fmt: skip
    app = await rerank_app(models=models)
    for model in ("qwen3-rerank", "cross"):
        response = await rerank(app, model=model, instruction="Find recipes")
        assert_error(response, 400, "instruction_not_supported", "instruction")
    listed = {m["id"]: m["instructions"] for m in (await app.http.get("/v1/models")).json()["data"]}
    assert listed == {"all-minilm-l6-v2": False, "qwen3-rerank": False, "cross": False}
    assert (await rerank(app)).status_code == 200  # the default instruction still applies


async def test_a_reserved_rerank_model_is_invisible_to_others(
    rerank_app: Any, tiny_reranker_dir: Any, tiny_cross_encoder_dir: Any
) -> None:
    models = rerank_models(tiny_reranker_dir, tiny_cross_encoder_dir)
    models["qwen3-rerank"]["tenants"] = ["test-tenant"]
    app = await rerank_app(models=models)
    assert (await rerank(app)).status_code == 200  # its own tenant
    other = await tenant_client(app, "other", {})
    async with other:
        payload = {"model": "qwen3-rerank", "query": QUERY, "documents": DOCUMENTS}
        hidden = await other.post("/v1/rerank", json=payload)
        assert_error(hidden, 404, "model_not_found", "model")
        unnamed = await other.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS})
        assert unnamed.json()["model"] == "cross"  # the first rerank model it can see
        listed = [m["id"] for m in (await other.get("/v1/models")).json()["data"]]
        assert "qwen3-rerank" not in listed


async def test_the_embeddings_scope_is_needed(rerank_app: Any) -> None:
    app = await rerank_app()
    reader = await tenant_client(app, "reader", {}, scopes=["search:read"])
    async with reader:
        payload = {"model": "cross", "query": QUERY, "documents": DOCUMENTS}
        assert_error(await reader.post("/v1/rerank", json=payload), 403, "permission_denied",
                     None)  # fmt: skip
