"""Upstream engines killed under traffic, then all down, then one that never answers: a
real `embedgate serve` in front of two real `embedgate serve` upstreams (which embed
through a stand-in engine: the model does not matter here, the processes do).

Requests fail over to the live upstream without an error; with none left they get a 502
at once; a silent upstream gives a 504 when its `timeout` runs out, never later."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from embedgate.storage.sql import SqlStateStore
from tests.conftest import ADMIN_KEY, issue_key
from tests.faults.helpers import (
    Call,
    FakeEngine,
    Load,
    SilentServer,
    engine_config,
    start_together,
)
from tests.helpers import ServerProcess, start_server

pytestmark = pytest.mark.slow
TIMEOUT_S = 10.0  # the live upstreams' `timeout`: generous on a loaded test machine
SILENT_TIMEOUT_S = 1.5  # the silent upstream's `timeout`
MARGIN_S = 3.0  # what the front itself may add to a timeout
KEY_ENV = "EMBEDGATE_TEST_UPSTREAM_KEY"


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def fleet(
    tmp_path: Path, silent: SilentServer, engine: FakeEngine
) -> Iterator[dict[str, ServerProcess]]:
    """Upstreams `a` and `b` (one state database, so that one tenant key works on both;
    their model `fake` is ``engine``), and `front`, which forwards model `remote` to both
    and model `slow` to ``silent``."""
    shared = f"sqlite:///{tmp_path / 'upstreams.db'}"
    asyncio.run(_migrate(shared, tmp_path))  # here, or two processes would race to
    env = {
        "EMBEDGATE_ADMIN_KEY": ADMIN_KEY,
        "EMBEDGATE_CONFIG": str(engine_config(tmp_path / "upstream.yaml", engine.url)),
        "EMBEDGATE_DATABASE_URL": shared,
        "EMBEDGATE_SECRET_KEY": "faults-upstream-secret-" + "x" * 32,
        "EMBEDGATE_WARMUP": "false",
    }
    with contextlib.ExitStack() as stack:
        a, b = start_together(stack, [(tmp_path / name, env, []) for name in ("a", "b")])
        config = tmp_path / "front.yaml"
        config.write_text(yaml.safe_dump(_front_config([a, b], silent)))
        front_env = {"EMBEDGATE_ADMIN_KEY": ADMIN_KEY, "EMBEDGATE_WARMUP": "false",
                     KEY_ENV: issue_key(a.url)}  # fmt: skip
        args = ["--config", str(config)]
        front = stack.enter_context(start_server(tmp_path / "front", env=front_env, args=args))
        front.key = issue_key(front.url)
        yield {"a": a, "b": b, "front": front}


async def _migrate(url: str, data_dir: Path) -> None:
    store = await SqlStateStore.open(url, data_dir)
    await store.aclose()


def _front_config(upstreams: list[ServerProcess], silent: SilentServer) -> dict[str, Any]:
    remote = {
        "backend": "openai",
        "base_urls": [f"{server.url}/v1" for server in upstreams],
        "upstream_model": "fake",
        "dimensions": FakeEngine.dimensions,
        "api_key_env": KEY_ENV,
        "timeout": TIMEOUT_S,
    }
    slow = {"backend": "openai", "base_urls": [silent.url], "dimensions": FakeEngine.dimensions,
            "timeout": SILENT_TIMEOUT_S}  # fmt: skip
    return {"models": {"remote": remote, "slow": slow}, "default_model": "remote"}


def test_failover_then_502_then_504_without_hanging(
    fleet: dict[str, ServerProcess], silent: SilentServer
) -> None:
    front, a, b = fleet["front"], fleet["a"], fleet["b"]
    urls = {f"{a.url}/v1", f"{b.url}/v1"}
    assert _health(front)["models"]["remote"]["upstreams"] == dict.fromkeys(urls, True)
    call = _embed_call(front, "remote")
    with Load({"remote": call}, threads=3, timeout=TIMEOUT_S + MARGIN_S) as load:
        time.sleep(2.0)
        killed = time.monotonic()
        a.process.kill()  # SIGKILL, requests in flight
        a.process.wait()
        time.sleep(2.0)
    after = load.between(killed)
    assert len(after) >= 3, "no traffic after the kill"
    assert all(o.status == 200 for o in load.outcomes), {(o.status, o.code) for o in load.outcomes}
    upstreams = _health(front)["models"]["remote"]["upstreams"]
    assert upstreams == {f"{a.url}/v1": False, f"{b.url}/v1": True}

    b.process.kill()
    b.process.wait()
    with httpx.Client(timeout=TIMEOUT_S + MARGIN_S) as client:
        started = time.monotonic()
        response = call(client)
        elapsed = time.monotonic() - started
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "upstream_error"
    assert "connection refused" in error["message"]
    assert elapsed < MARGIN_S  # refused at once: no wait for the timeout
    health = httpx.get(f"{front.url}/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"

    with httpx.Client(timeout=SILENT_TIMEOUT_S + 30) as client:
        started = time.monotonic()
        response = _embed_call(front, "slow")(client)
        elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert f"{SILENT_TIMEOUT_S:g}s" in response.json()["error"]["message"]
    assert SILENT_TIMEOUT_S <= elapsed < SILENT_TIMEOUT_S + MARGIN_S
    assert front.process.poll() is None


def _embed_call(front: ServerProcess, model: str) -> Call:
    """A new text each time: the embedding cache would answer a repeated one itself."""
    headers = {"Authorization": f"Bearer {front.key}"}
    numbers = itertools.count()

    def call(client: httpx.Client) -> httpx.Response:
        body = {"model": model, "input": [f"failover traffic {next(numbers)}"]}
        return client.post(f"{front.url}/v1/embeddings", json=body, headers=headers)

    return call


def _health(server: ServerProcess) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    body: dict[str, Any] = httpx.get(f"{server.url}/health", headers=admin).json()
    return body
