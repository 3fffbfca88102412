"""GET /health and GET /metrics."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, INVALID_KEY_BODY

pytestmark = pytest.mark.anyio


async def test_health_reports_readiness_and_device(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    model = body["models"]["all-minilm-l6-v2"]
    assert model["ready"] is True
    assert model["device"] == "cpu"
    assert model["backend"] == "local"
    assert model["dimensions"] == 384
    assert model["queue_depth"] == 0
    assert "gpu_memory" not in model  # only on CUDA
    assert body["database"] == {"backend": "sqlite", "ready": True}


async def test_metrics_need_the_admin_key(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_KEY}):
        response = await client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.json() == INVALID_KEY_BODY


async def test_metrics_count_requests_errors_batches_and_tokens(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/v1/embeddings", json={"input": ["one", "two"]})
    await client.post("/v1/embeddings", json={"input": ""})
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200
    text = response.text
    assert 'embedgate_requests_total{route="/v1/embeddings",status="200"}' in text
    assert 'embedgate_errors_total{code="invalid_value"}' in text
    assert 'embedgate_request_duration_seconds_bucket{le="0.005",route="/v1/embeddings"}' in text
    assert 'embedgate_queue_depth{model="all-minilm-l6-v2"} 0.0' in text
    assert 'embedgate_batch_size_count{model="all-minilm-l6-v2"}' in text
    assert 'embedgate_tokens_total{model="all-minilm-l6-v2"}' in text
    assert 'embedgate_inference_seconds_count{model="all-minilm-l6-v2"}' in text


async def test_a_bug_is_a_500_envelope_with_request_id(
    app_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await app_factory(warmup=False)

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret detail that must not leak")

    monkeypatch.setattr(app.app.state.runtime.embeddings, "embed", broken)
    response = await app.http.post("/v1/embeddings", json={"input": "x"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret detail" not in response.text
    assert response.headers["x-request-id"].startswith("req_")
    metrics = await app.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert 'embedgate_errors_total{code="internal_error"} 1.0' in metrics.text


async def test_health_is_503_when_the_database_is_down(
    app_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await app_factory(warmup=False)

    async def down() -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(app.app.state.runtime.control.store, "ping", down)
    response = await app.http.get("/health", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["database"] == {"backend": "sqlite", "ready": False}
