"""Key guessing is throttled per client address, and /health without the admin key shows
readiness only (issue 13, point 8). Two client addresses are simulated through a trusted
proxy's X-Forwarded-For (``forwarded_allow_ips``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, INVALID_KEY_BODY
from tests.helpers import ServerProcess
from tests.hostile_tenants.conftest import bearer, make_tenant, serve

pytestmark = pytest.mark.slow
PER_MINUTE = 10  # the default auth_failures_per_minute
WRONG_ADMIN = "admin_wrong_0123456789abcdefghijklmnopqrstuvwx"
WRONG_TENANT = "tenant_victim-co_" + "G" * 40  # well-formed, never issued


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("throttle") / "data"
    with serve(data, EMBEDGATE_FORWARDED_ALLOW_IPS="127.0.0.1") as started:
        started.key = make_tenant(started.url, "victim-co")
        yield started


def send(
    server: ServerProcess, address: str, method: str, path: str, key: str | None = None,
    **kwargs: Any,
) -> httpx.Response:  # fmt: skip
    headers = {"X-Forwarded-For": address, **(bearer(key) if key is not None else {})}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=30, **kwargs)


def guesses(call: Callable[[], httpx.Response], count: int) -> tuple[list[httpx.Response], float]:
    started = time.monotonic()
    answers = [call() for _ in range(count)]
    return answers, time.monotonic() - started


def assert_throttled(answers: list[httpx.Response], elapsed: float) -> None:
    """The first PER_MINUTE get the plain 401; then 429 (a token refills every 6 s, so a
    long run lets a few more through)."""
    assert [r.status_code for r in answers[:PER_MINUTE]] == [401] * PER_MINUTE
    assert all(r.json() == INVALID_KEY_BODY for r in answers[:PER_MINUTE])
    statuses = [r.status_code for r in answers]
    assert set(statuses) == {401, 429}
    assert statuses.count(401) <= PER_MINUTE + 1 + elapsed * PER_MINUTE / 60
    refused = next(r for r in answers if r.status_code == 429)
    error = refused.json()["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "rate_limit_exceeded", "rate_limit_error", None,
    )  # fmt: skip
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert statuses[-1] == 429


def test_admin_key_guesses_are_throttled(server: ServerProcess) -> None:
    guesser, other = "198.51.100.1", "198.51.100.2"
    answers, elapsed = guesses(
        lambda: send(server, guesser, "GET", "/admin/tenants", WRONG_ADMIN), 600
    )
    assert_throttled(answers, elapsed)
    # the right key from the guessing address is refused too: the throttle is no oracle
    assert send(server, guesser, "GET", "/admin/tenants", ADMIN_KEY).status_code == 429
    assert send(server, other, "GET", "/admin/tenants", ADMIN_KEY).status_code == 200
    assert send(server, other, "GET", "/admin/tenants", WRONG_ADMIN).json() == INVALID_KEY_BODY


def test_tenant_key_guesses_are_throttled(server: ServerProcess) -> None:
    guesser, other = "198.51.100.11", "198.51.100.12"
    answers, elapsed = guesses(lambda: send(server, guesser, "GET", "/v1/models", WRONG_TENANT), 60)
    assert_throttled(answers, elapsed)
    assert send(server, guesser, "GET", "/v1/models", server.key).status_code == 429
    assert send(server, other, "GET", "/v1/models", server.key).status_code == 200


def test_console_login_guesses_are_throttled(server: ServerProcess) -> None:
    guesser, other = "198.51.100.21", "198.51.100.22"

    def login(address: str, key: str) -> httpx.Response:
        return send(server, address, "POST", "/console/login", json={"key": key})

    answers, elapsed = guesses(lambda: login(guesser, WRONG_TENANT), 60)
    assert_throttled(answers, elapsed)
    assert login(guesser, server.key).status_code == 429
    assert login(guesser, ADMIN_KEY).status_code == 429
    assert login(other, server.key).status_code == 200


def test_health_without_the_admin_key_shows_readiness_only(server: ServerProcess) -> None:
    address = "198.51.100.31"
    for key in (None, server.key):  # no key, or a tenant's
        public = send(server, address, "GET", "/health", key)
        assert public.status_code == 200
        body = public.json()
        assert set(body) == {"status", "version", "models", "database", "rate_limits", "search"}
        assert body["status"] == "ok"
        assert body["models"] == {"all-minilm-l6-v2": {"ready": True}}
        assert body["database"] == body["rate_limits"] == body["search"] == {"ready": True}
        assert "queue_depth" not in public.text
    full = send(server, address, "GET", "/health", ADMIN_KEY).json()
    assert full["models"]["all-minilm-l6-v2"]["queue_depth"] == 0
    assert full["database"] == {"backend": "sqlite", "ready": True}
    wrong = send(server, address, "GET", "/health", WRONG_ADMIN)
    assert wrong.status_code == 401
    assert wrong.json() == INVALID_KEY_BODY
