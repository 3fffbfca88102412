"""Two `embedgate serve` replicas on the machine's PostgreSQL and Redis share one limit."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import ADMIN_KEY, ADMIN_URL, replica_env
from tests.helpers import ServerProcess, spread_embeddings, start_server

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def shared_services(redis_prefix: str) -> Iterator[tuple[str, str]]:
    """A database and a Redis key prefix of this test's own, removed afterwards."""
    name = f"embedgate_test_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", redis_prefix
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def replicas(tmp_path: Path, database: str, prefix: str) -> Iterator[list[ServerProcess]]:
    config = tmp_path / "embedgate.yaml"
    config.write_text("plans:\n  default:\n    rpm: 20\n    max_concurrency: 100\n")
    env = replica_env(database, prefix, EMBEDGATE_CONFIG=str(config))
    with (
        start_server(tmp_path / "replica-a", env=env) as first,
        start_server(tmp_path / "replica-b", env=env) as second,
    ):
        yield [first, second]


def test_rpm_20_over_two_replicas_admits_20(
    tmp_path: Path, shared_services: tuple[str, str]
) -> None:
    database, prefix = shared_services
    with replicas(tmp_path, database, prefix) as servers:
        first, second = servers
        httpx.post(f"{first.url}/admin/tenants", json={"id": "acme"}, headers=ADMIN)
        created = httpx.post(f"{first.url}/admin/tenants/acme/keys", json={}, headers=ADMIN)
        key = created.json()["key"]
        # made on one replica, known to the other
        me = httpx.get(f"{second.url}/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200
        assert me.json()["policy"]["rpm"] == 20
        statuses = asyncio.run(spread_embeddings(servers, key, 40))
        assert set(statuses) <= {200, 429}, statuses
        assert 19 <= statuses.count(200) <= 20, statuses  # the /v1/me above took one
        assert statuses.count(429) >= 20
        _other_limits_hold_across_replicas(servers)


def _tenant(server: ServerProcess, tenant_id: str, **policy: object) -> dict[str, str]:
    body = {"id": tenant_id, "policy": policy}
    assert httpx.post(f"{server.url}/admin/tenants", json=body, headers=ADMIN).status_code == 201
    created = httpx.post(f"{server.url}/admin/tenants/{tenant_id}/keys", json={}, headers=ADMIN)
    return {"Authorization": f"Bearer {created.json()['key']}"}


def _other_limits_hold_across_replicas(servers: list[ServerProcess]) -> None:
    first, second = servers
    # policy made on the second replica, denied on both
    headers = _tenant(second, "strict", max_dimensions=64, blocked_terms=["falcon"])
    for server in servers:
        url = f"{server.url}/v1/embeddings"
        wide = httpx.post(url, json={"input": "x"}, headers=headers)
        assert wide.json()["error"]["code"] == "dimension_limit_exceeded"
        blocked = httpx.post(url, json={"input": "FALCON", "dimensions": 64}, headers=headers)
        assert blocked.json()["error"]["code"] == "content_blocked"
    # one monthly quota, spent through both replicas
    headers = _tenant(first, "quota-co", monthly_token_quota=40)
    spent, turn = 0, 0
    while True:
        server = servers[turn % 2]
        turn += 1
        body = {"input": "alpha beta gamma delta"}
        response = httpx.post(f"{server.url}/v1/embeddings", json=body, headers=headers)
        if response.status_code != 200:
            break
        spent += response.json()["usage"]["prompt_tokens"]
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert 30 < spent <= 40
    # one concurrency slot between both replicas
    headers = _tenant(second, "serial", max_concurrency=1)
    batch = [f"a longer sentence, number {i}, to keep the model busy" for i in range(256)]
    statuses = asyncio.run(_concurrent(servers, headers, batch))
    assert sorted(statuses) == [200, 429], statuses


async def _concurrent(servers: list[ServerProcess], headers: dict[str, str],
                      batch: list[str]) -> list[int]:  # fmt: skip
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        responses = await asyncio.gather(*(
            client.post(f"{server.url}/v1/embeddings", json={"input": batch})
            for server in servers
        ))  # fmt: skip
    return [r.status_code for r in responses]
