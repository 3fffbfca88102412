"""Hostile input, in-process: the limits of docs/api.md ("Limits on input") one by one.

Every refusal is a 4xx in the OpenAI envelope, with the code and parameter a client can act
on; nothing is a 5xx. Requests that were 5xx before are marked as such.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, AppClient, make_settings, open_app

pytestmark = pytest.mark.anyio
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
JSON = {"content-type": "application/json"}
LIMIT = 2 * 1024 * 1024  # max_request_bytes of this module's app
SEARCH = "/v1/collections/kb/search"
DOCUMENTS = "/v1/collections/kb/documents"
PROSE = "The quick brown fox jumps over the lazy dog. " * 2223  # 100,035 characters


@pytest.fixture(scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AppClient]:
    """One app for the module, with a collection `kb` holding one document."""
    settings = make_settings(tmp_path_factory.mktemp("hostile"), warmup=False,
                             max_request_bytes=LIMIT)  # fmt: skip
    app, lifespan, client, key = await open_app(settings)
    assert (await client.post("/v1/collections", json={"name": "kb"})).status_code == 201
    doc = {"id": "cat", "text": "A cat sleeps on the mat.", "metadata": {"kind": "pet"}}
    assert (await client.post(DOCUMENTS, json={"documents": [doc]})).status_code == 200
    yield AppClient(app, client, key)
    await client.aclose()
    await lifespan.__aexit__(None, None, None)


def refused(response: httpx.Response, status: int, code: str | None, param: Any = ...) -> Any:
    """The error of a refusal, checked: its status, the exact envelope, its code (and param)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code, error
    if param is not ...:
        assert error["param"] == param, error
    return error


async def post(api: AppClient, path: str, content: bytes, admin: bool = False) -> httpx.Response:
    headers = {**JSON, **(ADMIN if admin else {})}
    return await api.http.post(path, content=content, headers=headers)


def nested(levels: int) -> Any:
    """JSON nested `levels` deep: a dict holding lists."""
    value: Any = 1
    for _ in range(levels - 1):
        value = [value]
    return {"k": value}


@pytest.mark.parametrize(
    ("path", "prefix", "admin"),
    [
        ("/v1/embeddings", b'{"input": ', False),
        (SEARCH, b'{"query": "x", "filter": ', False),
        ("/v1/collections", b'{"name": "deep", "metadata": ', False),  # was a 400 without code
        ("/admin/tenants", b'{"id": "deep", "policy": ', True),
    ],
)
async def test_json_nested_10000_levels_is_invalid_json(
    api: AppClient, path: str, prefix: bytes, admin: bool
) -> None:
    body = prefix + b"[" * 10_000 + b"]" * 10_000 + b"}"
    refused(await post(api, path, body, admin), 400, "invalid_json", None)


async def test_nesting_past_64_levels_is_refused(api: AppClient) -> None:
    """Metadata 300 levels deep used to be stored, and then every read of it was a 500."""
    # {"documents": [{"metadata": M}]}: M starts at level 4, so 61 levels of M make 64.
    deep = {"id": "deep", "text": "deep", "metadata": nested(61)}
    assert (await api.http.post(DOCUMENTS, json={"documents": [deep]})).status_code == 200
    read = await api.http.get(f"{DOCUMENTS}/deep")
    assert read.status_code == 200
    assert read.json()["metadata"] == nested(61)
    assert (await api.http.get(DOCUMENTS)).status_code == 200
    deeper = {"id": "deeper", "text": "deeper", "metadata": nested(62)}
    error = refused(await api.http.post(DOCUMENTS, json={"documents": [deeper]}), 400,
                    "invalid_value")  # fmt: skip
    assert error["param"].startswith("documents[0].metadata.k[0]")
    assert "64 levels" in error["message"]
    made = await api.http.post("/v1/collections", json={"name": "deep", "metadata": nested(70)})
    assert refused(made, 400, "invalid_value")["param"].startswith("metadata.k")


@pytest.mark.parametrize(
    ("path", "body", "admin"),
    [
        ("/v1/embeddings", b'{"input": "caf\xc3\x28"}', False),
        (SEARCH, b'{"query": "\xff\xfe"}', False),
        ("/v1/collections", b'{"name": "s1", "metadata": {"a": "\\ud800"}}', False),  # was 500
        (DOCUMENTS, b'{"documents": [{"id": "\\udc00", "text": "x"}]}', False),  # was 500
        (DOCUMENTS, b'{"documents": [{"text": "x", "metadata": {"\\ud800": 1}}]}', False),  # 409
        ("/admin/tenants", b'{"id": "s2", "policy": {"blocked_terms": ["\\ud800"]}}', True),
        ("/v1/embeddings", b"not json at all", False),
        (SEARCH, b'{"query": "x",}', False),
    ],
)  # fmt: skip
async def test_invalid_utf8_lone_surrogates_and_broken_json_are_invalid_json(
    api: AppClient, path: str, body: bytes, admin: bool
) -> None:
    refused(await post(api, path, body, admin), 400, "invalid_json", None)


@pytest.mark.parametrize(
    ("path", "body", "admin"),
    [
        (SEARCH, b'{"query": "x", "min_score": NaN}', False),  # was a 200
        (SEARCH, b'{"query": "x", "min_score": Infinity}', False),
        (SEARCH, b'{"query": "x", "min_score": -Infinity}', False),
        (SEARCH, b'{"query": "x", "min_score": 1e400}', False),  # was a 200 (infinity)
        (SEARCH, b'{"query": "x", "filter": {"kind": NaN}}', False),
        (SEARCH, b'{"query": "x", "filter": {"kind": {"$in": [Infinity]}}}', False),
        ("/v1/collections", b'{"name": "nan", "metadata": {"a": NaN}}', False),  # was a 500
        ("/v1/embeddings", b'{"input": "x", "dimensions": NaN}', False),
        ("/admin/tenants", b'{"id": "nan", "policy": {"priority": 1e400}}', True),
    ],
)
async def test_nan_and_infinity_are_invalid_json(
    api: AppClient, path: str, body: bytes, admin: bool
) -> None:
    refused(await post(api, path, body, admin), 400, "invalid_json", None)


async def test_a_body_of_the_wrong_kind(api: AppClient) -> None:
    as_text = await api.http.post(SEARCH, content=b'{"query": "x"}',
                                  headers={"content-type": "text/plain"})  # fmt: skip
    assert "JSON object" in refused(as_text, 400, "invalid_value", None)["message"]
    for body in (b'["x"]', b'"x"', b"5", b"null"):
        refused(await post(api, SEARCH, body), 400, "invalid_value", None)
        refused(await post(api, "/admin/tenants", body, admin=True), 400, "invalid_value", None)


@pytest.mark.parametrize("top_k", [0, -1, 1001, 10**9, 10**30, 1e300, 5.0, "5", True, None])
async def test_top_k_out_of_range_or_not_an_integer(api: AppClient, top_k: Any) -> None:
    response = await api.http.post(SEARCH, json={"query": "cat", "top_k": top_k})
    refused(response, 400, "invalid_value", "top_k")


async def test_top_k_at_its_limits(api: AppClient) -> None:
    for top_k in (1, 1000):
        response = await api.http.post(SEARCH, json={"query": "cat", "top_k": top_k})
        assert response.status_code == 200
        assert [hit["id"] for hit in response.json()["data"]][:1] == ["cat"]


async def test_min_score_must_be_a_number(api: AppClient) -> None:
    for min_score in ("0.5", [0.5], {"gt": 0.5}):
        response = await api.http.post(SEARCH, json={"query": "x", "min_score": min_score})
        refused(response, 400, "invalid_value", "min_score")


async def test_2049_inputs_and_documents(api: AppClient) -> None:
    texts = await api.http.post("/v1/embeddings", json={"input": ["x"] * 2049})
    assert "2048" in refused(texts, 400, "invalid_value", "input")["message"]
    ids = await api.http.post("/v1/embeddings", json={"input": [[101, 102]] * 2049})
    refused(ids, 400, "invalid_value", "input")
    docs = await api.http.post(DOCUMENTS, json={"documents": [{"text": "x"}] * 2049})
    refused(docs, 400, "invalid_value", "documents")


async def test_an_upsert_of_100000_documents(api: AppClient) -> None:
    body = {"documents": [{"text": "x"}] * 100_000}  # 1.3 MB: under this app's body limit
    refused(await api.http.post(DOCUMENTS, json=body), 400, "invalid_value", "documents")


async def test_100000_characters_are_counted_in_tokens(api: AppClient) -> None:
    """docs/api.md: prose of that length is far past max_tokens (400; truncate_inputs would
    cut it instead), while a text that tokenizes short is embedded whatever its length."""
    prose = await api.http.post("/v1/embeddings", json={"input": PROSE})
    assert "256" in refused(prose, 400, "context_length_exceeded", "input")["message"]
    query = await api.http.post(SEARCH, json={"query": PROSE})
    refused(query, 400, "context_length_exceeded", "input")
    one_word = await api.http.post("/v1/embeddings", json={"input": "x" * 100_000})
    assert one_word.status_code == 200
    assert one_word.json()["usage"]["prompt_tokens"] == 3  # [CLS] [UNK] [SEP]


@pytest.mark.parametrize("dimensions", [0, -1, 31, 385, 10**9, 10**30, -(10**30), "64", 64.0, True])
async def test_dimensions_out_of_range_or_not_an_integer(api: AppClient, dimensions: Any) -> None:
    response = await api.http.post("/v1/embeddings", json={"input": "x", "dimensions": dimensions})
    refused(response, 400, "invalid_value", "dimensions")
    made = await api.http.post("/v1/collections", json={"name": "d", "dimensions": dimensions})
    refused(made, 400, "invalid_value", "dimensions")


@pytest.mark.parametrize(
    "token_ids", [[30522], [-1], [2**31], [2**63], [10**30], [[101, 10**30]], [1.5], [True, 1]]
)
async def test_token_ids_outside_the_vocabulary_or_not_integers(
    api: AppClient, token_ids: Any
) -> None:
    response = await api.http.post("/v1/embeddings", json={"input": token_ids})
    refused(response, 400, "invalid_value", "input")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/embeddings", {"input": {"text": "x"}}, "input"),
        ("/v1/embeddings", {"input": ["x", 1]}, "input"),
        ("/v1/embeddings", {"input": "x", "model": 5}, "model"),
        ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}, "encoding_format"),
        ("/v1/embeddings", {"input": "x", "instruction": ["x"]}, "instruction"),
        ("/v1/collections", {"name": 5}, "name"),
        ("/v1/collections", {"name": "ok", "metadata": ["x"]}, "metadata"),
        ("/v1/collections", {"name": "ok", "shape": "round"}, "shape"),
        (DOCUMENTS, {"documents": "x"}, "documents"),
        (DOCUMENTS, {"documents": [{"text": 5}]}, "documents[0].text"),
        (DOCUMENTS, {"documents": [{"text": "x", "id": 5}]}, "documents[0].id"),
        (SEARCH, {"query": ["x"]}, "query"),
        (SEARCH, {"query": "x", "mode": "sql"}, "mode"),
        (SEARCH, {"query": "x", "filter": "kind = pet"}, "filter"),
    ],
)
async def test_wrong_types_name_their_parameter(
    api: AppClient, path: str, body: dict[str, Any], param: str
) -> None:
    refused(await api.http.post(path, json=body), 400, "invalid_value", param)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/admin/tenants", {"id": 5}, "id"),
        ("/admin/tenants", {"id": "ok", "policy": {"rpm": "many"}}, "policy.rpm"),
        ("/admin/tenants", {"id": "ok", "policy": {"rpm": 10**30}}, "policy.rpm"),
        (
            "/admin/tenants",
            {"id": "ok", "policy": {"ip_allowlist": [True]}},
            "policy.ip_allowlist[0]",
        ),  # was read as 0.0.0.1/32
        ("/admin/tenants/test-tenant/keys", {"scopes": ["root"]}, "scopes[0]"),
        ("/admin/tenants/test-tenant/keys", {"expires_in": 10**15}, "expires_in"),  # was 500
        ("/admin/tenants/test-tenant/keys", {"expires_in": 10**30}, "expires_in"),
        ("/admin/tenants/test-tenant/keys", {"expires_in": -1}, "expires_in"),
    ],
)
async def test_wrong_admin_values_name_their_parameter(
    api: AppClient, path: str, body: dict[str, Any], param: str
) -> None:
    response = await post(api, path, json.dumps(body).encode(), admin=True)
    refused(response, 400, "invalid_value", param)


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [
        ("POST", "/v1/collections", {"name": "n", "metadata": {"a": "x\x00"}}, "metadata.a"),
        ("POST", "/v1/collections", {"name": "n", "metadata": {"a\x00": 1}}, "metadata"),
        ("POST", DOCUMENTS, {"documents": [{"text": "a\x00b"}]}, "documents[0].text"),
        ("POST", DOCUMENTS, {"documents": [{"id": "\x00", "text": "x"}]}, "documents[0].id"),
        ("POST", SEARCH, {"query": "a\x00"}, "query"),
        ("POST", SEARCH, {"query": "a", "filter": {"k\x00": 1}}, "filter"),
        ("GET", f"{DOCUMENTS}?after=a%00", None, "after"),
        ("GET", f"{DOCUMENTS}/a%00b", None, "id"),
        ("GET", "/v1/collections/a%00b", None, "name"),
        ("GET", "/v1/collections/a%00b/no/such/route", None, "name"),
    ],
)
async def test_nul_characters_are_refused(
    api: AppClient, method: str, path: str, body: Any, param: str
) -> None:
    response = await api.http.request(method, path, json=body)
    refused(response, 400, "invalid_value", param)


async def test_nul_characters_on_postgresql(app_factory: Any, postgres_url: str) -> None:
    """PostgreSQL can neither store nor compare NUL: each of these was a 500 there."""
    app = await app_factory(warmup=False, database_url=postgres_url,
                            secret_key="hostile-secret-" + "x" * 32)  # fmt: skip
    app.http.headers.update(ADMIN)
    for method, path, body, param in [
        ("GET", "/admin/tenants/a%00b", None, "tenant_id"),
        ("GET", "/admin/tenants/a%00b/keys", None, "tenant_id"),
        ("DELETE", "/admin/tenants/test-tenant/keys/key%00", None, "key_id"),
        ("GET", "/admin/tenants?after=a%00", None, "after"),
        ("GET", "/admin/audit?tenant=%00", None, "tenant"),
        ("GET", "/admin/audit?event=x%00", None, "event"),
        ("GET", "/admin/usage?tenant=%00&format=csv", None, "tenant"),
        ("POST", "/admin/tenants", {"id": "n1", "name": "a\x00"}, "name"),
        ("POST", "/admin/tenants", {"id": "n2", "plan": "\x00"}, "plan"),
        ("POST", "/admin/tenants", {"id": "n3", "policy": {"blocked_terms": ["a\x00"]}},
         "policy.blocked_terms[0]"),
        ("PATCH", "/admin/tenants/test-tenant", {"name": "\x00"}, "name"),
        ("POST", "/admin/tenants/test-tenant/keys", {"name": "k\x00"}, "name"),
    ]:  # fmt: skip
        response = await app.http.request(method, path, json=body)
        assert "NUL" in refused(response, 400, "invalid_value", param)["message"], path


async def test_bodies_over_the_limit_are_413_on_every_route(api: AppClient) -> None:
    """A streamed (chunked) body over the limit was a 400 on routes FastAPI parses."""

    async def stream(prefix: bytes) -> AsyncIterator[bytes]:
        yield prefix
        for _ in range(LIMIT // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    for path, prefix in [("/v1/embeddings", b'{"input": "'), (SEARCH, b'{"query": "'),
                         ("/v1/collections", b'{"name": "big", "model": "'),
                         (DOCUMENTS, b'{"documents": [{"text": "')]:  # fmt: skip
        streamed = await api.http.post(path, content=stream(prefix), headers=JSON)
        refused(streamed, 413, "request_too_large", None)
        declared = await post(api, path, prefix + b"x" * LIMIT + b'"}')
        refused(declared, 413, "request_too_large", None)
    admin = await api.http.post("/admin/tenants", content=stream(b'{"id": "'),
                                headers={**JSON, **ADMIN})  # fmt: skip
    refused(admin, 413, "request_too_large", None)


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/nothing", 404, "not_found"),
        ("GET", "/v1/collections/kb/nothing/here", 404, "not_found"),
        ("PUT", "/v1/embeddings", 405, "method_not_allowed"),
        ("TRACE", "/v1/collections", 405, "method_not_allowed"),
        ("PATCH", "/admin/tenants", 405, "method_not_allowed"),
    ],
)
async def test_unknown_routes_and_methods(
    api: AppClient, method: str, path: str, status: int, code: str
) -> None:
    refused(await api.http.request(method, path, headers=ADMIN), status, code, None)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/", 405),
        ("GET", "/static/../../etc/passwd", 404),
        ("GET", "/static/%2e%2e/%2e%2e/etc/passwd", 404),
        ("GET", "/static/console.css%00", 404),
        ("GET", "/static/%ff%fe", 404),
        ("GET", "/static/" + "a" * 5000, 404),
        ("POST", "/static/console.css", 405),
        ("DELETE", "/favicon.ico", 405),
        ("GET", "/console/nothing", 404),
    ],
)
async def test_console_paths_outside_the_schema(
    api: AppClient, method: str, path: str, status: int
) -> None:
    """The console's pages are not in the OpenAPI schema, so schemathesis never sees them."""
    code = "not_found" if status == 404 else "method_not_allowed"
    refused(await api.http.request(method, path), status, code, None)
