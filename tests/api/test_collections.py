"""/v1/collections over HTTP on the embedded store and the real model."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, AppClient

pytestmark = pytest.mark.anyio
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
DOCS = [
    {"id": "cat", "text": "The cat sleeps on the warm windowsill.", "metadata": {"kind": "pet"}},
    {"id": "dog", "text": "A dog fetches the ball in the park.", "metadata": {"kind": "pet"}},
    {"id": "tax", "text": "Quarterly tax filings are due at the end of March.",
     "metadata": {"kind": "finance"}},
    {"id": "bond", "text": "Bond yields rose after the central bank raised rates.",
     "metadata": {"kind": "finance"}},
    {"id": "zh", "text": "机器学习模型需要大量的训练数据。", "metadata": {"kind": "tech"}},
]  # fmt: skip


@pytest.fixture
async def app(app_factory: Any) -> AppClient:
    created: AppClient = await app_factory(warmup=False)
    return created


async def kb(client: httpx.AsyncClient, name: str = "kb", **extra: Any) -> httpx.Response:
    made = await client.post("/v1/collections", json={"name": name, **extra})
    assert made.status_code == 201, made.text
    written = await client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS})
    assert written.status_code == 200, written.text
    return written


async def search(client: httpx.AsyncClient, name: str = "kb", **body: Any) -> httpx.Response:
    return await client.post(f"/v1/collections/{name}/search", json=body)


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["data"]]


async def test_create_get_list_delete(app: AppClient) -> None:
    made = await app.http.post("/v1/collections", json={"name": "Docs_v1.2", "dimensions": 128,
                                                         "metadata": {"team": "x"}})  # fmt: skip
    assert made.status_code == 201
    body = made.json()
    assert {k: body[k] for k in ("name", "object", "model", "dimensions", "document_count",
                                 "metadata")} == {
        "name": "Docs_v1.2", "object": "collection", "model": "all-minilm-l6-v2",
        "dimensions": 128, "document_count": 0, "metadata": {"team": "x"},
    }  # fmt: skip
    again = await app.http.post("/v1/collections", json={"name": "Docs_v1.2"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "collection_exists"
    listed = (await app.http.get("/v1/collections")).json()
    assert [c["name"] for c in listed["data"]] == ["Docs_v1.2"]
    deleted = await app.http.delete("/v1/collections/Docs_v1.2")
    assert deleted.json() == {"name": "Docs_v1.2", "object": "collection", "deleted": True}
    assert (await app.http.get("/v1/collections/Docs_v1.2")).status_code == 404


async def test_upsert_embeds_only_new_or_changed_text(app: AppClient) -> None:
    first = await kb(app.http)
    assert [d["status"] for d in first.json()["data"]] == ["created"] * len(DOCS)
    assert first.json()["usage"]["prompt_tokens"] > 0
    changed = [{**DOCS[0], "metadata": {"kind": "animal"}},
               {**DOCS[1], "text": "A dog chases the ball across the park."}]  # fmt: skip
    second = await app.http.post("/v1/collections/kb/documents", json={"documents": changed})
    assert [d["status"] for d in second.json()["data"]] == ["unchanged", "updated"]
    assert 0 < second.json()["usage"]["prompt_tokens"] < first.json()["usage"]["prompt_tokens"]
    cat = (await app.http.get("/v1/collections/kb/documents/cat")).json()
    assert cat == {"id": "cat", "object": "document", "text": DOCS[0]["text"],
                   "metadata": {"kind": "animal"}}  # fmt: skip
    assert (await app.http.get("/v1/collections/kb")).json()["document_count"] == len(DOCS)


async def test_stored_vector_is_the_models_embedding(app: AppClient) -> None:
    await kb(app.http)
    doc = (await app.http.get("/v1/collections/kb/documents/cat?include_vector=true")).json()
    direct = await app.http.post("/v1/embeddings", json={"input": DOCS[0]["text"]})
    assert doc["embedding"] == pytest.approx(direct.json()["data"][0]["embedding"], abs=1e-6)


async def test_vector_search_ranks_by_meaning(app: AppClient) -> None:
    await kb(app.http)
    found = await search(app.http, query="a kitten napping in the sun", top_k=3)
    assert ids(found)[0] == "cat"
    scores = [hit["score"] for hit in found.json()["data"]]
    assert scores == sorted(scores, reverse=True)
    assert len(scores) == 3
    assert found.json()["usage"]["prompt_tokens"] > 0
    assert ids(await search(app.http, query="interest rates and markets", top_k=1)) == ["bond"]


async def test_filters_and_min_score(app: AppClient) -> None:
    await kb(app.http)
    pets = await search(app.http, query="animals", top_k=10, filter={"kind": "pet"})
    assert sorted(ids(pets)) == ["cat", "dog"]
    either = await search(app.http, query="animals", top_k=10,
                          filter={"kind": {"$in": ["finance", "tech"]}})  # fmt: skip
    assert sorted(ids(either)) == ["bond", "tax", "zh"]
    strict = await search(app.http, query="a cat on a windowsill", top_k=10, min_score=0.5)
    assert ids(strict) == ["cat"]


async def test_keyword_and_hybrid_modes(app: AppClient) -> None:
    await kb(app.http)
    keyword = await search(app.http, query="tax filings", mode="keyword")
    assert ids(keyword)[0] == "tax"
    assert keyword.json()["usage"]["prompt_tokens"] == 0  # nothing embedded
    weird = await search(app.http, query='"tax" AND (filings OR -x*', mode="keyword")
    assert weird.status_code == 200
    hybrid = await search(app.http, query="tax filings deadline", mode="hybrid", top_k=2)
    assert ids(hybrid)[0] == "tax"
    chinese = await search(app.http, query="训练数据", mode="keyword")
    assert ids(chinese) == ["zh"]


async def test_pagination_and_deletes(app: AppClient) -> None:
    await kb(app.http)
    page = (await app.http.get("/v1/collections/kb/documents?limit=2")).json()
    assert [d["id"] for d in page["data"]] == ["bond", "cat"]
    assert page["has_more"]
    rest = (await app.http.get(f"/v1/collections/kb/documents?after={page['next_after']}"
                               "&limit=10")).json()  # fmt: skip
    assert [d["id"] for d in rest["data"]] == ["dog", "tax", "zh"]
    assert not rest["has_more"]
    assert (await app.http.delete("/v1/collections/kb/documents/dog")).status_code == 200
    assert (await app.http.get("/v1/collections/kb/documents/dog")).status_code == 404
    assert "dog" not in ids(await search(app.http, query="a dog with a ball", top_k=10))


@pytest.mark.parametrize(
    "path",
    ["/v1/collections/..%2Fx", "/v1/collections/a%2Fb/documents", "/v1/collections/a%00b",
     "/v1/collections/%2e%2e", "/v1/collections/" + "x" * 300, "/v1/collections/-x"],
)  # fmt: skip
async def test_hostile_names_are_refused(app: AppClient, path: str) -> None:
    response = await app.http.get(path)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "name"


async def test_bad_requests_are_400(app: AppClient) -> None:
    await kb(app.http)
    for body in ({"query": ""}, {"query": "x", "top_k": 0}, {"query": "x", "top_k": 10_001},
                 {"query": "x", "mode": "fuzzy"}, {"query": "x", "filter": {"a": {"$gt": 1}}},
                 {"query": "x", "filter": {"a": {"$in": []}}}, {"query": "a\x00"}):  # fmt: skip
        response = await search(app.http, **body)
        assert response.status_code == 400, (body, response.text)
    for doc in ({"text": "a\x00b"}, {"text": "ok", "metadata": {"k": "a\x00"}}, {"text": ""}):
        bad = await app.http.post("/v1/collections/kb/documents", json={"documents": [doc]})
        assert bad.status_code == 400, (doc, bad.text)
    duplicate = await app.http.post("/v1/collections/kb/documents",
                                    json={"documents": [DOCS[0], DOCS[0]]})  # fmt: skip
    assert duplicate.status_code == 400


async def test_policy_limits_and_metering_apply(app_factory: Any) -> None:
    plans = {"default": {"blocked_terms": ["secret plan"], "rpm": 5}}  # every route counts
    app = await app_factory(warmup=False, plans=plans)
    await app.http.post("/v1/collections", json={"name": "kb"})
    blocked = await app.http.post("/v1/collections/kb/documents",
                                  json={"documents": [{"text": "the Secret Plan is"}]})  # fmt: skip
    assert blocked.json()["error"]["code"] == "content_blocked"
    ok = await app.http.post("/v1/collections/kb/documents", json={"documents": DOCS[:2]})
    assert ok.status_code == 200
    assert ok.headers["x-ratelimit-limit-requests"] == "5"
    assert ok.headers["x-ratelimit-remaining-requests"] == "2"  # creation and 403 counted
    assert (await search(app.http, query="cats")).status_code == 200
    assert (await search(app.http, query="dogs")).status_code == 200  # the fifth of 5
    limited = await search(app.http, query="birds")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    usage = (await app.http.get("/admin/usage?tenant=test-tenant", headers=ADMIN)).json()
    assert usage["data"][0]["tokens"] > 0


async def test_scopes(app: AppClient) -> None:
    made = await app.http.post("/admin/tenants/test-tenant/keys",
                               json={"scopes": ["embeddings"]}, headers=ADMIN)  # fmt: skip
    only_embeddings = {"Authorization": f"Bearer {made.json()['key']}"}
    response = await app.http.get("/v1/collections", headers=only_embeddings)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


async def test_deleting_a_tenant_erases_its_collections(app: AppClient) -> None:
    await kb(app.http)
    runtime = app.app.state.runtime
    store = await runtime.stores.get()
    tenant = await runtime.control.store.tenants.get("test-tenant")
    assert await store.list_collections(tenant.uid)  # the store keys a tenant by its uid
    deleted = await app.http.delete("/admin/tenants/test-tenant", headers=ADMIN)
    assert deleted.status_code == 200
    assert await store.list_collections(tenant.uid) == []
    tenants = app.app.state.runtime.settings.data_dir / "tenants"
    assert [p for p in tenants.iterdir() if p.is_dir()] == []  # its directory is gone
    assert (tenants / "deleted").is_file()  # and its uid is refused from now on
