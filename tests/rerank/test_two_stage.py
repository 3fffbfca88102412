"""Two-stage search over HTTP: `POST /v1/collections/{name}/search` with `rerank` retrieves
candidates by the mode, reranks them with a rerank model, and keeps `top_k`; in-process on
the tiny rerankers beside the bundled model, and once on a real `embedgate serve`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from tests.conftest import ADMIN_KEY, AppClient
from tests.docstore.pg_fixtures import *  # noqa: F403  (the fixtures)
from tests.docstore.pg_fixtures import OWNER, new_database, url_for
from tests.helpers import start_server
from tests.rerank.conftest import rerank_models
from tests.rerank.test_api import assert_error, tenant_client

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
QUERY = "How many days of paid leave do employees get?"
TEXTS = [
    "Employees get 25 days of paid leave every year.",
    "Expenses are reimbursed within 30 days of submission.",
    "The office opens at 9 am and closes at 6 pm.",
    "Parking is free for staff in the basement garage.",
    "New laptops are ordered through the IT service desk.",
    "Paid leave must be requested two weeks in advance.",
    "Sick days do not count against your paid leave.",
    "The cafeteria serves lunch from noon until two.",
    "Employees may work from home on Fridays.",
    "Unused leave days carry over to the next year.",
    "Travel must be booked through the company portal.",
    "The fire drill happens every first Monday of the month.",
]
DOCS = [{"id": f"d{i}", "text": text, "metadata": {"n": i}} for i, text in enumerate(TEXTS)]
HIT_KEYS = {"id", "text", "score", "metadata"}


async def kb(client: httpx.AsyncClient, name: str = "kb") -> None:
    made = await client.post("/v1/collections", json={"name": name})
    assert made.status_code == 201, made.text
    written = await client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS})
    assert written.status_code == 200, written.text


async def search(client: httpx.AsyncClient, name: str = "kb", **body: Any) -> httpx.Response:
    return await client.post(f"/v1/collections/{name}/search", json={"query": QUERY, **body})


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
async def app(rerank_app: Any) -> AppClient:
    started: AppClient = await rerank_app()
    await kb(started.http)
    return started


def usage_rows(app: AppClient, route_like: str) -> list[tuple[Any, ...]]:
    database = app.app.state.runtime.settings.data_dir / "embedgate.db"
    with sqlite3.connect(database) as db:
        return db.execute(
            "SELECT route, model, inputs, tokens, status FROM usage_records "
            "WHERE route LIKE ? ORDER BY id", (route_like,),
        ).fetchall()  # fmt: skip


async def assert_reranks_the_candidates(client: httpx.AsyncClient, mode: str, model: str) -> None:
    """The same as retrieving `candidates` by the mode, then calling /v1/rerank on them."""
    candidates = ok(await search(client, mode=mode, top_k=7))["data"]
    assert len(candidates) == 7
    reference = ok(await client.post("/v1/rerank", json={
        "model": model, "query": QUERY, "documents": [c["text"] for c in candidates],
    }))  # fmt: skip
    body = ok(await search(client, mode=mode, top_k=3, rerank={"model": model, "candidates": 7}))
    expected = reference["results"][:3]
    assert [h["id"] for h in body["data"]] == [candidates[r["index"]]["id"] for r in expected]
    for hit, ranked in zip(body["data"], expected, strict=True):
        assert set(hit) == HIT_KEYS | {"rerank_score"}
        assert hit["rerank_score"] == pytest.approx(ranked["relevance_score"], abs=1e-6)
        retrieved = candidates[ranked["index"]]
        assert (hit["score"], hit["text"], hit["metadata"]) == (
            retrieved["score"],
            retrieved["text"],
            retrieved["metadata"],
        )  # the mode's score
    scores = [h["rerank_score"] for h in body["data"]]
    assert scores == sorted(scores, reverse=True)
    usage = body["usage"]
    assert usage["rerank_tokens"] == reference["usage"]["total_tokens"]
    assert usage["prompt_tokens"] == (0 if mode == "keyword" else ok(
        await search(client, mode=mode, top_k=1))["usage"]["prompt_tokens"])  # fmt: skip
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["rerank_tokens"]
    assert list(usage) == ["prompt_tokens", "rerank_tokens", "total_tokens"]


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
@pytest.mark.parametrize("model", ["qwen3-rerank", "cross"])
async def test_results_are_the_rerank_of_the_retrieved_candidates(
    app: AppClient, mode: str, model: str
) -> None:
    await assert_reranks_the_candidates(app.http, mode, model)


@pytest.fixture
def pg_database(pg_server: Any, pg_superuser_url: str, pgvector_url: str) -> Iterator[str]:
    """A database of its own on PostgreSQL + pgvector, for state and documents alike."""
    name = new_database(pg_superuser_url, owner=OWNER)
    with psycopg.connect(url_for(pg_server, "postgres", name), autocommit=True) as admin:
        admin.execute("CREATE EXTENSION vector")
    try:
        yield url_for(pg_server, OWNER, name)
    finally:
        with psycopg.connect(pg_superuser_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_on_postgresql_and_pgvector(pg_database: str, rerank_app: Any) -> None:
    # pg_database first: it outlives the app, which closes its connections at teardown.
    app = await rerank_app(database_url=pg_database, secret_key="two-stage-" + "x" * 32)
    store = await app.app.state.runtime.stores.get()
    assert store.backend == "pgvector"
    await kb(app.http)
    for mode in ("vector", "keyword", "hybrid"):
        await assert_reranks_the_candidates(app.http, mode, "cross")


async def test_without_rerank_the_answer_is_unchanged(app: AppClient) -> None:
    plain = await search(app.http, top_k=4)
    assert (await search(app.http, top_k=4, rerank=None)).content == plain.content
    body = ok(plain)
    assert list(body) == ["object", "data", "usage"]
    assert list(body["usage"]) == ["prompt_tokens", "total_tokens"]
    assert all(list(hit) == ["id", "text", "score", "metadata"] for hit in body["data"])
    assert usage_rows(app, "%/rerank") == []  # and nothing reranked, nothing metered as such


async def test_candidates_default_to_four_per_result_within_the_limits(
    rerank_app: Any,
) -> None:
    app = await rerank_app()
    await kb(app.http)
    ok(await search(app.http, top_k=2, rerank={"model": "cross"}))  # 8 of 12 documents
    ok(await search(app.http, top_k=3, rerank={}))  # 12 of 12 documents, the first model
    capped = await rerank_app(max_rerank_documents=5)
    await kb(capped.http)
    ok(await search(capped.http, top_k=2, rerank={"model": "cross"}))  # 8, cut to 5
    await app.app.state.runtime.control.usage.flush()
    await capped.app.state.runtime.control.usage.flush()
    rows = usage_rows(app, "%/rerank")
    assert [(r[1], r[2]) for r in rows] == [("cross", 8), ("qwen3-rerank", 12)]
    assert [(r[1], r[2]) for r in usage_rows(capped, "%/rerank")] == [("cross", 5)]
    plan = await tenant_client(app, "small-plan", {"max_documents_per_rerank": 3})
    async with plan:
        await kb(plan)
        body = ok(await search(plan, top_k=2, rerank={"model": "cross"}))  # 8, cut to 3
        assert len(body["data"]) == 2
    await app.app.state.runtime.control.usage.flush()
    assert usage_rows(app, "%/rerank")[-1][1:3] == ("cross", 3)


async def test_candidates_out_of_bounds_are_400(rerank_app: Any) -> None:
    app = await rerank_app(max_rerank_documents=6)
    await kb(app.http)
    fewer = await search(app.http, top_k=3, rerank={"candidates": 2})
    assert "at least `top_k` (3)" in assert_error(fewer, 400, "invalid_value",
                                                  "rerank.candidates")  # fmt: skip
    more = await search(app.http, top_k=3, rerank={"candidates": 7})
    assert "this server reranks at most 6" in assert_error(more, 400, "invalid_value",
                                                           "rerank.candidates")  # fmt: skip
    assert_error(await search(app.http, top_k=7, rerank={}), 400, "invalid_value", "top_k")
    for bad in (0, -1, "5", 2.5, True):
        assert_error(await search(app.http, rerank={"candidates": bad}), 400, "invalid_value",
                     "rerank.candidates")  # fmt: skip
    for bad in ("", 3, ["cross"]):
        assert_error(await search(app.http, rerank={"model": bad}), 400, "invalid_value",
                     "rerank.model")  # fmt: skip
    assert_error(await search(app.http, rerank={"top_n": 2}), 400, "invalid_value",
                 "rerank.top_n")  # fmt: skip
    assert_error(await search(app.http, rerank="cross"), 400, "invalid_value", "rerank")
    assert len(ok(await search(app.http, top_k=3, rerank={"candidates": 6}))["data"]) == 3
    plan = await tenant_client(app, "small-plan", {"max_documents_per_rerank": 4})
    async with plan:
        refused = await search(plan, top_k=2, rerank={"candidates": 5})
        message = assert_error(refused, 400, "invalid_value", "rerank.candidates")
        assert "your plan reranks at most 4" in message


async def test_model_errors_are_those_of_rerank(rerank_app: Any) -> None:
    app = await rerank_app()
    await kb(app.http)
    wrong = await search(app.http, rerank={"model": "all-minilm-l6-v2"})
    assert_error(wrong, 400, "wrong_model_task", "rerank.model")
    assert_error(await search(app.http, rerank={"model": "nope"}), 404, "model_not_found",
                 "rerank.model")  # fmt: skip
    alias = ok(await search(app.http, rerank={"model": "cross-alias"}))
    named = ok(await search(app.http, rerank={"model": "cross"}))
    assert alias == named
    limited = await tenant_client(app, "embed-only", {"allowed_models": ["all-minilm-l6-v2"]})
    async with limited:
        await kb(limited)
        for rerank in ({"model": "cross"}, {}):
            refused = await search(limited, rerank=rerank)
            assert_error(refused, 403, "model_not_allowed", "rerank.model")
    one = await tenant_client(app, "cross-only", {"allowed_models": ["all-minilm-l6-v2",
                                                                     "cross"]})  # fmt: skip
    async with one:
        await kb(one)
        ok(await search(one, top_k=2, rerank={}))  # the first rerank model it may use
    await app.app.state.runtime.control.usage.flush()
    assert usage_rows(app, "%/rerank")[-1][1] == "cross"


async def test_a_server_without_a_rerank_model_says_so(app_factory: Any) -> None:
    app = await app_factory(warmup=False)
    await kb(app.http)
    for rerank in ({}, {"model": "all-minilm-l6-v2"}):
        response = await search(app.http, rerank=rerank)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "rerank.model"
    message = assert_error(await search(app.http, rerank={}), 400, "invalid_value",
                           "rerank.model")  # fmt: skip
    assert "no rerank model" in message


async def test_refusals_come_before_any_work(app: AppClient) -> None:
    """A refused rerank stage embeds no query and opens no collection: nothing is spent,
    and a missing collection cannot be told from a present one by it."""
    before = ok(await app.http.get("/v1/me"))["usage"]["tokens"]
    for name in ("kb", "missing"):
        refused = await search(app.http, name, rerank={"model": "nope"})
        assert_error(refused, 404, "model_not_found", "rerank.model")
    assert ok(await app.http.get("/v1/me"))["usage"]["tokens"] == before
    assert_error(await search(app.http, "missing", rerank={}), 404, "not_found", "name")


async def test_a_candidate_too_long_for_the_reranker_is_named(rerank_app: Any) -> None:
    app = await rerank_app()
    plan = await tenant_client(app, "short", {"max_tokens_per_input": 150})
    async with plan:
        await kb(plan)  # every document fits the embedding model in 150 tokens
        ok(await search(plan, top_k=2, rerank={"model": "cross"}))
        refused = await search(plan, top_k=2, rerank={"model": "qwen3-rerank"})  # its prompt
        message = assert_error(refused, 400, "context_length_exceeded", "rerank.candidates")
        assert "the document `d" in message
        assert "documents[" not in message
    truncating = await rerank_app(truncate_inputs=True)
    plan = await tenant_client(truncating, "short", {"max_tokens_per_input": 150})
    async with plan:
        await kb(plan)
        ok(await search(plan, top_k=2, rerank={"model": "qwen3-rerank"}))


async def test_keyword_mode_reranks_without_embedding(app: AppClient) -> None:
    body = ok(await search(app.http, mode="keyword", query="paid leave", top_k=2,
                           rerank={"model": "cross", "candidates": 3}))  # fmt: skip
    assert len(body["data"]) == 2
    assert body["usage"]["prompt_tokens"] == 0
    assert body["usage"]["total_tokens"] == body["usage"]["rerank_tokens"] > 0
    assert all("leave" in hit["text"] for hit in body["data"])


async def test_min_score_and_filter_apply_to_retrieval(app: AppClient) -> None:
    plain = ok(await search(app.http, top_k=12))["data"]
    cut = plain[3]["score"]  # the 4 best pass
    body = ok(await search(app.http, top_k=3, min_score=cut,
                           rerank={"model": "cross", "candidates": 12}))  # fmt: skip
    assert {h["id"] for h in body["data"]} <= {h["id"] for h in plain[:4]}
    assert all(h["score"] >= cut for h in body["data"])
    await app.app.state.runtime.control.usage.flush()
    assert usage_rows(app, "%/rerank")[-1][2] == 4  # only the 4 were reranked
    flt = ok(await search(app.http, top_k=2, filter={"n": {"$in": [3, 4, 5]}},
                          rerank={"model": "cross"}))  # fmt: skip
    assert {h["id"] for h in flt["data"]} <= {"d3", "d4", "d5"}
    nothing = ok(await search(app.http, top_k=2, filter={"n": 99}, rerank={"model": "cross"}))
    assert nothing["data"] == []
    assert nothing["usage"]["rerank_tokens"] == 0


async def test_metered_as_the_search_and_its_rerank_stage(app: AppClient) -> None:
    before = ok(await app.http.get("/v1/me"))["usage"]
    body = ok(await search(app.http, top_k=2, rerank={"model": "qwen3-rerank", "candidates": 5}))
    refused = await search(app.http, top_k=2, rerank={"model": "qwen3-rerank", "candidates": 1})
    assert refused.status_code == 400
    await app.app.state.runtime.control.usage.flush()
    rows = usage_rows(app, "/v1/collections/{name}/search%")
    usage = body["usage"]
    assert rows[-3:] == [
        ("/v1/collections/{name}/search", "all-minilm-l6-v2", 1, usage["prompt_tokens"], 200),
        ("/v1/collections/{name}/search/rerank", "qwen3-rerank", 5, usage["rerank_tokens"],
         200),
        ("/v1/collections/{name}/search", None, 0, 0, 400),  # refused: one record, an error
    ]  # fmt: skip
    after = ok(await app.http.get("/v1/me"))["usage"]
    assert after["tokens"] - before["tokens"] == usage["total_tokens"]
    assert after["requests"] - before["requests"] == 3  # the first /v1/me and the two searches
    assert after["rerank_requests"] - before["rerank_requests"] == 1
    assert after["rerank_inputs"] - before["rerank_inputs"] == 5
    assert after["rerank_tokens"] - before["rerank_tokens"] == usage["rerank_tokens"]
    reranked = ok(
        await app.http.post(
            "/v1/rerank", json={"model": "cross", "query": "q", "documents": ["a", "b"]}
        )
    )["usage"]["total_tokens"]
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    report = ok(await app.http.get("/admin/usage", headers=admin))["data"]
    total = {k: sum(row[k] for row in report) for k in report[0] if k.startswith(("re", "to"))}
    assert total["rerank_requests"] == after["rerank_requests"] + 1
    assert total["rerank_tokens"] == after["rerank_tokens"] + reranked
    assert total["tokens"] - total["rerank_tokens"] == after["tokens"] - after["rerank_tokens"]


async def test_rerank_tokens_count_against_the_quota(rerank_app: Any) -> None:
    """The query's tokens and the pairs' are both spent from the monthly quota: with room
    for the query but not for the pairs, the rerank stage is refused."""
    app = await rerank_app()
    await app.http.post("/v1/collections", json={"name": "kb"})
    upsert = ok(await app.http.post("/v1/collections/kb/documents", json={"documents": DOCS}))
    written = upsert["usage"]["total_tokens"]
    cost = ok(await search(app.http, top_k=2, rerank={"model": "cross"}))["usage"]
    for tenant, spare, status in (("exact", cost["rerank_tokens"], 200),
                                  ("short", cost["rerank_tokens"] // 2, 429)):  # fmt: skip
        quota = written + cost["prompt_tokens"] + spare
        client = await tenant_client(app, tenant, {"monthly_token_quota": quota})
        async with client:
            await kb(client)
            response = await search(client, top_k=2, rerank={"model": "cross"})
            assert response.status_code == status, response.text
            used = ok(await client.get("/v1/me"))["usage"]["tokens"]
        if status == 200:
            assert response.json()["usage"] == cost
            assert used == quota
        else:
            assert_error(response, 429, "insufficient_quota", None)


async def test_another_tenants_collection_and_model_stay_out_of_reach(
    rerank_app: Any, tiny_reranker_dir: Path, tiny_cross_encoder_dir: Path
) -> None:
    models = rerank_models(tiny_reranker_dir, tiny_cross_encoder_dir)
    models["qwen3-rerank"]["tenants"] = ["owner"]  # reserved for the tenant `owner`
    app = await rerank_app(models=models)
    await kb(app.http)
    owner = await tenant_client(app, "owner", {})
    async with owner:
        made = await owner.post("/v1/collections", json={"name": "private"})
        assert made.status_code == 201
        docs = {"documents": [{"id": "p", "text": "Owner's private leave policy."}]}
        ok(await owner.post("/v1/collections/private/documents", json=docs))
        mine = ok(await search(owner, "private", rerank={"model": "qwen3-rerank"}))
        assert [h["id"] for h in mine["data"]] == ["p"]
    hidden = await search(app.http, rerank={"model": "qwen3-rerank"})
    assert_error(hidden, 404, "model_not_found", "rerank.model")
    foreign = await search(app.http, "private", rerank={"model": "cross"})
    assert_error(foreign, 404, "not_found", "name")
    ok(await search(app.http, top_k=1, rerank={}))  # its default skips the reserved model
    await app.app.state.runtime.control.usage.flush()
    assert usage_rows(app, "%/rerank")[-1][1] == "cross"


async def test_a_search_reader_may_rerank(app: AppClient) -> None:
    """The rerank stage is part of the search: `search:read` is the scope it needs."""
    reader = await tenant_client(app, "reader", {}, scopes=["search:read", "search:write"])
    async with reader:
        await kb(reader)
        ok(await search(reader, top_k=2, rerank={"model": "cross"}))


def test_two_stage_search_on_a_served_process(
    tmp_path: Path, tiny_reranker_dir: Path, tiny_cross_encoder_dir: Path
) -> None:
    config = tmp_path / "embedgate.yaml"
    config.write_text(
        yaml.safe_dump({"models": rerank_models(tiny_reranker_dir, tiny_cross_encoder_dir)})
    )
    env = {"EMBEDGATE_ADMIN_KEY": ADMIN_KEY, "EMBEDGATE_CONFIG": str(config)}
    with start_server(tmp_path / "data", env=env) as server:
        httpx.post(f"{server.url}/admin/tenants", json={"id": "t"}, headers=ADMIN)
        key = httpx.post(f"{server.url}/admin/tenants/t/keys", json={}, headers=ADMIN)
        with httpx.Client(
            base_url=f"{server.url}/v1",
            timeout=60,
            headers={"Authorization": f"Bearer {key.json()['key']}"},
        ) as client:
            client.post("/collections", json={"name": "kb"}).raise_for_status()
            client.post("/collections/kb/documents", json={"documents": DOCS}).raise_for_status()
            path = "/collections/kb/search"
            candidates = client.post(path, json={"query": QUERY, "mode": "hybrid",
                                                 "top_k": 6}).json()["data"]  # fmt: skip
            texts = [c["text"] for c in candidates]
            reference = client.post("/rerank", json={"query": QUERY, "documents": texts,
                                                     "top_n": 2}).json()["results"]  # fmt: skip
            response = client.post(path, json={"query": QUERY, "mode": "hybrid", "top_k": 2,
                                               "rerank": {"candidates": 6}})  # fmt: skip
            # Both unnamed: the first rerank model (by the config file's order, `cross`).
            assert response.status_code == 200, response.text
            hits = response.json()["data"]
            assert [h["id"] for h in hits] == [candidates[r["index"]]["id"] for r in reference]
            assert [h["rerank_score"] for h in hits] == pytest.approx(
                [r["relevance_score"] for r in reference], abs=1e-6
            )
    assert QUERY not in server.log()
