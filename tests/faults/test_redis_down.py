"""Redis killed under traffic: fail-open keeps serving and says "degraded", fail-closed
answers 503 `rate_limiter_unavailable`; both recover by themselves when Redis is back."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from embedgate.limits.admission import RETRY_DOWN_S
from embedgate.limits.redis import TIMEOUT_S
from tests.conftest import ADMIN_KEY, issue_key
from tests.faults.helpers import (
    FakeEngine,
    Load,
    Outcome,
    PrivateRedis,
    engine_config,
    start_together,
)
from tests.helpers import ServerProcess

pytestmark = pytest.mark.slow
# The slowest answer allowed: Redis is given up on after TIMEOUT_S; the rest is margin.
BOUND_S = TIMEOUT_S + 4.5
# From Redis accepting connections to /health "ok": it is asked again RETRY_DOWN_S after
# a failure (or at the next /health).
RECOVERY_S = RETRY_DOWN_S + 9.0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def servers(
    tmp_path: Path, redis_server: PrivateRedis, engine: FakeEngine
) -> Iterator[dict[str, ServerProcess]]:
    """Two servers on the private Redis, failing open and failing closed."""
    plans = {"default": {"rpm": 100_000}}  # a limit, so that every request asks Redis
    config = engine_config(tmp_path / "embedgate.yaml", engine.url, plans=plans)
    env = {
        "EMBEDGATE_ADMIN_KEY": ADMIN_KEY,
        "EMBEDGATE_REDIS_URL": redis_server.url,
        "EMBEDGATE_CONFIG": str(config),
        "EMBEDGATE_WARMUP": "false",
    }
    launches = [
        (tmp_path / mode, {**env, "EMBEDGATE_RATE_LIMIT_FAILURE_MODE": mode}, [])
        for mode in ("open", "closed")
    ]
    with contextlib.ExitStack() as stack:
        opened, closed = start_together(stack, launches)
        for server in (opened, closed):
            server.key = issue_key(server.url)
        yield {"open": opened, "closed": closed}


def test_redis_down_follows_the_failure_mode_and_recovers(
    servers: dict[str, ServerProcess], redis_server: PrivateRedis
) -> None:
    for server in servers.values():
        _assert_health(server, 200, "ok", ready=True)
        assert "x-ratelimit-limit-requests" in _embed(server).headers
    calls = {mode: _embed_call(server) for mode, server in servers.items()}
    with Load(calls, threads=2) as load:
        time.sleep(1.0)
        killed = time.monotonic()
        redis_server.kill()
        time.sleep(2.0)
        _assert_health(servers["open"], 200, "degraded", ready=False)
        _assert_health(servers["closed"], 503, "unavailable", ready=False)
        redis_server.start()  # the same port
        back = time.monotonic()
        recovered = _ok_again(servers.values(), deadline=back + RECOVERY_S)
        time.sleep(1.0)
    assert all(server.process.poll() is None for server in servers.values())

    assert max(o.elapsed for o in load.outcomes) < BOUND_S
    opened = [o for o in load.outcomes if o.op == "open"]
    assert all(o.status == 200 for o in opened), _statuses(opened)
    closed = [o for o in load.outcomes if o.op == "closed"]
    refused = [o for o in closed if o.status != 200]
    assert all((o.status, o.code) == (503, "rate_limiter_unavailable") for o in refused)
    assert any(killed < o.started < back for o in refused), "fail-closed never refused"
    assert all(o.status == 200 for o in closed if o.started > recovered), _statuses(closed)
    for server in servers.values():
        assert "x-ratelimit-limit-requests" in _embed(server).headers  # limits are back


def _embed(server: ServerProcess) -> httpx.Response:
    with httpx.Client(timeout=BOUND_S) as client:
        response = _embed_call(server)(client)
    assert response.status_code == 200, response.text
    return response


def _embed_call(server: ServerProcess) -> Callable[[httpx.Client], httpx.Response]:
    headers = {"Authorization": f"Bearer {server.key}"}
    url = f"{server.url}/v1/embeddings"
    return lambda client: client.post(url, json={"input": "traffic"}, headers=headers)


def _assert_health(server: ServerProcess, status: int, word: str, *, ready: bool) -> None:
    health = httpx.get(f"{server.url}/health", timeout=BOUND_S)
    assert health.status_code == status, health.text
    assert health.json()["status"] == word
    assert health.json()["rate_limits"]["ready"] is ready


def _ok_again(servers: Iterable[ServerProcess], deadline: float) -> float:
    """When every server's /health said "ok" again, polling until ``deadline``."""
    pending = list(servers)
    while pending and time.monotonic() < deadline:
        pending = [s for s in pending if httpx.get(f"{s.url}/health").json()["status"] != "ok"]
        time.sleep(0.1)
    assert not pending, f"/health not ok {RECOVERY_S}s after Redis was back"
    return time.monotonic()


def _statuses(outcomes: list[Outcome]) -> dict[tuple[int, str | None], int]:
    counts: dict[tuple[int, str | None], int] = {}
    for o in outcomes:
        counts[(o.status, o.code)] = counts.get((o.status, o.code), 0) + 1
    return counts
