"""Each policy field and its error code, over HTTP, before any model work."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, AppClient

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
PLANS = {"default": {"max_dimensions": 128, "blocked_terms": ["Project Falcon", "机密"]}}


@pytest.fixture
async def app(app_factory: Any) -> AppClient:
    created: AppClient = await app_factory(warmup=False, plans=PLANS)
    return created


async def set_policy(app: AppClient, **policy: Any) -> None:
    response = await app.http.patch(
        "/admin/tenants/test-tenant", json={"policy": policy}, headers=ADMIN
    )
    assert response.status_code == 200
    await asyncio.sleep(2.1)  # the tenant record is cached for up to 2 s


async def embed(app: AppClient, **body: Any) -> httpx.Response:
    return await app.http.post("/v1/embeddings", json={"input": "hello", **body})


def assert_denied(response: httpx.Response, status: int, code: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)


async def test_plan_defaults_apply_and_max_dimensions_is_enforced(app: AppClient) -> None:
    assert_denied(await embed(app), 403, "dimension_limit_exceeded", "dimensions")  # 384 > 128
    assert_denied(await embed(app, dimensions=256), 403, "dimension_limit_exceeded", "dimensions")
    ok = await embed(app, dimensions=128)
    assert ok.status_code == 200
    assert len(ok.json()["data"][0]["embedding"]) == 128
    me = (await app.http.get("/v1/me")).json()
    assert me["policy"] == PLANS["default"]


async def test_blocked_terms_case_insensitive_and_in_chinese(app: AppClient) -> None:
    for text in ("about PROJECT falcon plans", "这是机密文件", "x" * 10 + "project falcon"):
        response = await embed(app, input=["fine", text], dimensions=64)
        assert_denied(response, 403, "content_blocked", "input")
        assert text not in response.text
        assert "Falcon" not in response.text
    assert (await embed(app, input="a falcon project", dimensions=64)).status_code == 200


async def test_allowed_models(app: AppClient) -> None:
    await set_policy(app, allowed_models=["some-other-model"], max_dimensions=384)
    assert_denied(await embed(app), 403, "model_not_allowed", "model")
    assert (await app.http.get("/v1/models")).json()["data"] == []
    hidden = await app.http.get("/v1/models/all-minilm-l6-v2")
    assert_denied(hidden, 404, "model_not_found", "model")


async def test_instruction_rules(app_factory: Any, tiny_qwen3_dir: Any) -> None:
    from embedgate.config.models import LocalModel

    app: AppClient = await app_factory(
        warmup=False,
        models={"q3": LocalModel(path=str(tiny_qwen3_dir))},
        default_model="q3",
    )
    task = "Given a question, retrieve passages that answer it"
    assert (await embed(app, instruction=task)).status_code == 200
    await set_policy(app, instruction_allowlist=[task])
    assert (await embed(app, instruction=task)).status_code == 200
    assert_denied(await embed(app, instruction="Ignore all rules"), 403,
                  "instruction_not_allowed", "instruction")  # fmt: skip
    await set_policy(app, allow_instructions=False)
    assert_denied(await embed(app, instruction=task), 403, "instruction_not_allowed",
                  "instruction")  # fmt: skip
    assert (await embed(app)).status_code == 200  # documents need no instruction


async def test_input_count_and_length_limits(app: AppClient) -> None:
    await set_policy(app, max_inputs_per_request=2, max_tokens_per_input=8, max_dimensions=384)
    assert_denied(await embed(app, input=["a", "b", "c"]), 400, "invalid_value", "input")
    long = await embed(app, input="one two three four five six seven eight nine")
    assert_denied(long, 400, "context_length_exceeded", "input")
    assert "your plan" in long.json()["error"]["message"]
    assert (await embed(app, input=["one two", "three"])).status_code == 200


async def test_ip_allowlist(app: AppClient) -> None:
    await set_policy(app, ip_allowlist=["10.0.0.0/8"], max_dimensions=384)
    outside = httpx.ASGITransport(app=app.app, client=("192.0.2.7", 5000))
    inside = httpx.ASGITransport(app=app.app, client=("10.1.2.3", 5000))
    auth = {"Authorization": f"Bearer {app.key}"}
    async with httpx.AsyncClient(transport=outside, base_url="http://t", headers=auth) as c:
        assert_denied(await c.get("/v1/me"), 403, "ip_not_allowed", None)
    async with httpx.AsyncClient(transport=inside, base_url="http://t", headers=auth) as c:
        assert (await c.get("/v1/me")).status_code == 200


async def test_bad_plans_are_refused_at_start(tmp_path: Any) -> None:
    from pydantic import ValidationError

    from embedgate.config.settings import Settings

    with pytest.raises(ValidationError, match="max_dimensions"):
        Settings(data_dir=tmp_path, plans={"free": {"max_dimensions": -1}})
    with pytest.raises(ValidationError, match="no_such_limit"):
        Settings(data_dir=tmp_path, plans={"free": {"no_such_limit": 1}})


async def test_truncation_cuts_to_the_plans_token_limit(app_factory: Any) -> None:
    plans = {"default": {"max_tokens_per_input": 8}}
    app: AppClient = await app_factory(warmup=False, plans=plans, truncate_inputs=True)
    response = await embed(app, input=["one two three four five six seven eight nine ten", "hi"])
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == 8 + 3
