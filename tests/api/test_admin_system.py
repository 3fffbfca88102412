"""GET /admin/system: the admin console's status panel."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from embedgate.api import system
from tests.conftest import ADMIN_KEY, INVALID_KEY_BODY, AppClient

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def test_system_status_shows_models_device_queues_and_cache(default_app: AppClient) -> None:
    client = default_app.http
    for _ in range(2):  # the second is answered from the cache
        await client.post("/v1/embeddings", json={"input": "a status probe"})
    response = await client.get("/admin/system", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "system"
    assert body["version"]
    assert body["uptime_s"] >= 0
    (model,) = [m for m in body["models"] if m["name"] == "all-minilm-l6-v2"]
    assert model == {
        "name": "all-minilm-l6-v2", "backend": "local", "device": "cpu", "dtype": "float32",
        "dimensions": 384, "max_tokens": 256, "ready": True, "queue_depth": 0, "aliases": [],
        "reserved_for": None,
    }  # fmt: skip
    assert body["device"] == {"type": "cpu", "id": "cpu", "name": None, "gpu_memory": None}
    assert body["queue_depth"] == 0
    cache = body["cache"]
    assert set(cache) == {"enabled", "entries", "bytes", "max_bytes", "hits", "misses",
                          "hit_ratio"}  # fmt: skip
    assert cache["hits"] >= 1
    assert 0 < cache["hit_ratio"] <= 1
    assert body["tenants"] >= 1
    assert body["database"] == {"backend": "sqlite"}
    assert body["rate_limits"]["backend"] == "memory"


async def test_system_status_needs_the_admin(default_app: AppClient) -> None:
    transport = httpx.ASGITransport(app=default_app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://embedgate.test") as bare:
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": f"Bearer {default_app.key}"}):  # fmt: skip
            response = await bare.get("/admin/system", headers=headers)
            assert response.status_code == 401
            assert response.json() == INVALID_KEY_BODY


def test_gpu_memory_is_shown_in_mb_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    def memory(device: str) -> dict[str, int]:
        assert device == "cuda:1"
        return {"allocated_bytes": 3 * 2**20, "reserved_bytes": 2**30, "used_bytes": 2**31,
                "total_bytes": 80 * 2**30}  # fmt: skip

    monkeypatch.setattr(system, "gpu_memory", memory)
    monkeypatch.setattr(system, "gpu_name", lambda device: "NVIDIA H100")
    device: dict[str, Any] = system._device_status(["cuda:1", "cpu"])
    assert device == {
        "type": "cuda", "id": "cuda:1", "name": "NVIDIA H100",
        "gpu_memory": {"allocated_mb": 3.0, "reserved_mb": 1024.0, "used_mb": 2048.0,
                       "total_mb": 81920.0},
    }  # fmt: skip
    assert system._device_status([]) == {"type": "none", "id": None, "name": None,
                                         "gpu_memory": None}  # fmt: skip
