"""Rate limits, concurrency, quotas and their headers, over HTTP on one process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from embedgate.app import create_app
from tests.conftest import ADMIN_KEY, AppClient, make_settings, open_app

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
RATE_HEADERS = [
    f"x-ratelimit-{part}-{kind}"
    for kind in ("requests", "tokens")
    for part in ("limit", "remaining", "reset")
]


async def start(app_factory: Any, **policy: Any) -> AppClient:
    created: AppClient = await app_factory(warmup=False, plans={"default": policy})
    return created


async def embed(client: httpx.AsyncClient, text: Any = "hello world") -> httpx.Response:
    return await client.post("/v1/embeddings", json={"input": text})


def assert_429(response: httpx.Response, code: str) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["type"] == "rate_limit_error"
    assert int(response.headers["retry-after"]) >= 1
    assert int(response.headers["retry-after-ms"]) >= 1
    return error


async def test_rpm_admits_the_limit_then_429_with_headers(app_factory: Any) -> None:
    app = await start(app_factory, rpm=3, tpm=10_000)
    responses = [await embed(app.http) for _ in range(4)]
    assert [r.status_code for r in responses[:3]] == [200, 200, 200]
    for response in responses[:3]:
        assert all(name in response.headers for name in RATE_HEADERS), response.headers
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        assert response.headers["x-ratelimit-limit-tokens"] == "10000"
    assert [r.headers["x-ratelimit-remaining-requests"] for r in responses[:3]] == ["2", "1", "0"]
    tokens = responses[0].json()["usage"]["prompt_tokens"]
    assert int(responses[0].headers["x-ratelimit-remaining-tokens"]) == 10_000 - tokens
    error = assert_429(responses[3], "rate_limit_exceeded")
    assert "requests per minute" in error["message"]
    assert responses[3].headers["x-ratelimit-remaining-requests"] == "0"
    assert 15 <= int(responses[3].headers["retry-after"]) <= 20  # 3/min: one every 20 s


async def test_every_v1_route_spends_a_request_and_carries_headers(app_factory: Any) -> None:
    app = await start(app_factory, rpm=5, tpm=1000)
    for left, path in zip("432", ("/v1/me", "/v1/models", "/v1/collections"), strict=True):
        response = await app.http.get(path)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-remaining-requests"] == left
        assert response.headers["x-ratelimit-remaining-tokens"] == "1000"  # no tokens spent
        assert all(name in response.headers for name in RATE_HEADERS)
    denied = await app.http.post("/v1/embeddings", json={"input": ""})  # a 400 after admission
    assert denied.status_code == 400
    assert denied.headers["x-ratelimit-remaining-requests"] == "1"
    assert denied.headers["x-ratelimit-limit-requests"] == "5"
    missing = await app.http.post("/v1/collections/none/search", json={"query": "q"})
    assert missing.status_code == 404  # counted too
    assert missing.headers["x-ratelimit-remaining-requests"] == "0"
    refused = await app.http.get("/v1/me")
    assert "requests per minute" in assert_429(refused, "rate_limit_exceeded")["message"]
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


async def test_zero_tpm_or_spent_quota_refuses_embeddings_but_not_other_routes(
    app_factory: Any,
) -> None:
    app = await start(app_factory, tpm=0, rpm=100)
    error = assert_429(await embed(app.http), "rate_limit_exceeded")
    assert "0 tokens per minute" in error["message"]
    assert (await app.http.get("/v1/me")).status_code == 200
    spent = await start(app_factory, monthly_token_quota=0)
    assert_429(await embed(spent.http), "insufficient_quota")
    assert (await spent.http.get("/v1/collections")).status_code == 200


async def test_a_request_that_fails_gives_its_lease_back(app_factory: Any) -> None:
    app = await start(app_factory, max_concurrency=1)
    for _ in range(3):  # 400s and 404s, each releasing the one slot
        assert (await app.http.post("/v1/embeddings", json={"input": ""})).status_code == 400
        assert (await app.http.get("/v1/collections/none")).status_code == 404
    assert (await embed(app.http)).status_code == 200


async def test_no_limits_no_headers(app_factory: Any) -> None:
    app = await start(app_factory)
    response = await embed(app.http)
    assert response.status_code == 200
    assert not [name for name in response.headers if name.startswith("x-ratelimit")]


async def test_tpm_counts_tokens_and_refuses_requests_larger_than_the_limit(
    app_factory: Any,
) -> None:
    app = await start(app_factory, tpm=40)
    error = assert_429(await embed(app.http, "word " * 60), "rate_limit_exceeded")
    assert "more than the 40 tokens per minute" in error["message"]
    first = await embed(app.http, "one two three four five six seven eight nine ten")
    assert first.status_code == 200
    used = first.json()["usage"]["prompt_tokens"]
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == 40 - used
    while (response := await embed(app.http, "one two three four five")).status_code == 200:
        pass
    assert "tokens per minute" in assert_429(response, "rate_limit_exceeded")["message"]


async def test_key_limits_apply_to_each_key_alone(app_factory: Any) -> None:
    app = await start(app_factory, key_rpm=2)
    created = await app.http.post("/admin/tenants/test-tenant/keys", json={}, headers=ADMIN)
    other = {"Authorization": f"Bearer {created.json()['key']}"}
    assert [(await embed(app.http)).status_code for _ in range(3)] == [200, 200, 429]
    second = [await app.http.post("/v1/embeddings", json={"input": "x"}, headers=other)
              for _ in range(3)]  # fmt: skip
    assert [r.status_code for r in second] == [200, 200, 429]
    assert "this API key" in second[2].json()["error"]["message"]


async def test_max_concurrency_refuses_requests_beyond_those_in_flight(app_factory: Any) -> None:
    app = await start(app_factory, max_concurrency=1)
    batch = [f"sentence number {i} about something" for i in range(512)]
    responses = await asyncio.gather(embed(app.http, batch), embed(app.http, batch))
    assert sorted(r.status_code for r in responses) == [200, 429]
    refused = next(r for r in responses if r.status_code == 429)
    assert "in flight" in assert_429(refused, "rate_limit_exceeded")["message"]
    assert (await embed(app.http)).status_code == 200  # the slot was given back


async def test_monthly_quota_then_insufficient_quota(app_factory: Any) -> None:
    app = await start(app_factory, monthly_token_quota=30)
    spent = 0
    while (response := await embed(app.http, "alpha beta gamma delta")).status_code == 200:
        spent += response.json()["usage"]["prompt_tokens"]
    error = assert_429(response, "insufficient_quota")
    assert "monthly token quota" in error["message"]
    assert int(response.headers["retry-after"]) > 0
    assert 0 < spent <= 30
    me = (await app.http.get("/v1/me")).json()
    assert me["usage"]["tokens"] == spent
    assert me["usage"]["quota"] == 30
    assert me["usage"]["quota_remaining"] == 30 - spent


async def test_quota_spent_before_a_restart_still_counts(tmp_path: Path) -> None:
    plans = {"default": {"monthly_token_quota": 12}}
    settings = make_settings(tmp_path, warmup=False, plans=plans)
    _app, lifespan, client, key = await open_app(settings)
    first = await embed(client, "alpha beta gamma delta")
    assert first.status_code == 200
    await client.aclose()
    await lifespan.__aexit__(None, None, None)  # flushes usage records

    again = create_app(settings)
    async with again.router.lifespan_context(again):
        transport = httpx.ASGITransport(app=again)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=headers
        ) as c:
            me = (await c.get("/v1/me")).json()["usage"]
            assert me["tokens"] == first.json()["usage"]["prompt_tokens"]
            while (response := await embed(c, "alpha beta gamma delta")).status_code == 200:
                pass
            assert_429(response, "insufficient_quota")
            me = (await c.get("/v1/me")).json()["usage"]
            assert me["tokens"] <= 12


async def test_rpm_zero_switches_a_tenant_off(app_factory: Any) -> None:
    app = await start(app_factory, rpm=0)
    error = assert_429(await embed(app.http), "rate_limit_exceeded")
    assert "No requests are allowed" in error["message"]


async def test_a_tpm_only_tenant_gets_token_headers_everywhere(app_factory: Any) -> None:
    app = await start(app_factory, tpm=500)
    me = await app.http.get("/v1/me")
    assert me.headers["x-ratelimit-remaining-tokens"] == "500"
    assert "x-ratelimit-limit-requests" not in me.headers
    embedded = await embed(app.http)
    spent = embedded.json()["usage"]["prompt_tokens"]
    assert embedded.headers["x-ratelimit-remaining-tokens"] == str(500 - spent)
    bad = await app.http.post("/v1/embeddings", json={"input": ""})
    assert bad.status_code == 400
    assert bad.headers["x-ratelimit-limit-tokens"] == "500"
