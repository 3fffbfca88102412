"""GET /v1/models: the OpenAI list shape."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_list_models(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    (model,) = body["data"]
    assert model["id"] == "all-minilm-l6-v2"
    assert model["object"] == "model"
    assert isinstance(model["created"], int)
    assert model["owned_by"] == "embedgate"
    assert model["dimensions"] == 384
    assert model["max_tokens"] == 256
    assert model["instructions"] is False


async def test_get_model(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models/all-minilm-l6-v2")
    assert response.json()["id"] == "all-minilm-l6-v2"
    missing = await client.get("/v1/models/gpt-4")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
