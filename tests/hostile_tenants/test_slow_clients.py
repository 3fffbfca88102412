"""Slow clients: connections that send half a request head, or a body that never ends, are
cut after the server's deadlines, and at the server's bound a newcomer takes the place of the
one that waited longest for its head (or gets 503 at once), so a crowd of them never locks
the other clients out (issue 13, point 5)."""

from __future__ import annotations

import contextlib
import json
import resource
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from embedgate.api.connections import EVICT_AFTER_S
from tests.conftest import issue_key
from tests.helpers import ServerProcess, start_server
from tests.hostile_tenants.conftest import QUIET

pytestmark = pytest.mark.slow
HEAD_S, BODY_S, DEADLINE_S = 2.0, 2.0, 6.0  # the deadlines of this module's server
MARGIN_S = 10.0  # a loaded machine may be this late; far below "never"
HALF_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaa"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {**QUIET, "EMBEDGATE_CLIENT_HEADER_TIMEOUT": str(HEAD_S),
           "EMBEDGATE_CLIENT_BODY_TIMEOUT": str(BODY_S),
           "EMBEDGATE_CLIENT_BODY_DEADLINE": str(DEADLINE_S)}  # fmt: skip
    with start_server(tmp_path_factory.mktemp("slow-clients") / "data", env=env) as started:
        started.key = issue_key(started.url)
        yield started


def connect(server: ServerProcess, sent: bytes = b"", timeout: float = 30) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    if sent:
        sock.sendall(sent)
    return sock


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def envelope(raw: bytes, status: int, code: str) -> dict[str, str]:
    """The answer's headers, after checking its status and OpenAI-shaped body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert int(lines[0].split()[1]) == status, raw[:300]
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    error: dict[str, Any] = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return headers


@pytest.mark.parametrize("kept_alive", [False, True], ids=["new-connection", "kept-alive"])
def test_a_half_sent_head_gets_408_after_the_head_timeout(
    server: ServerProcess, kept_alive: bool
) -> None:
    with connect(server) as sock:
        if kept_alive:  # one whole request first: the clock restarts at its answer
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.sendall(HALF_HEAD)
        raw = read_to_close(sock)
        elapsed = time.monotonic() - started
    headers = envelope(raw, 408, "request_timeout")
    assert headers["connection"] == "close"
    assert HEAD_S * 0.8 <= elapsed < HEAD_S + MARGIN_S


def test_a_connection_that_sends_nothing_is_closed(server: ServerProcess) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        envelope(read_to_close(sock), 408, "request_timeout")
    assert time.monotonic() - started < HEAD_S + MARGIN_S


def post_head(server: ServerProcess, length: int) -> bytes:
    return (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + server.key.encode() + b"\r\n"
            b"Content-Length: " + str(length).encode() + b"\r\n\r\n")  # fmt: skip


def test_a_stalled_body_is_cut(server: ServerProcess) -> None:
    with connect(server, post_head(server, 1000) + b'{"input": "') as sock:
        started = time.monotonic()
        raw = read_to_close(sock)
        elapsed = time.monotonic() - started
    headers = envelope(raw, 408, "request_timeout")
    assert headers["connection"] == "close"
    assert BODY_S * 0.8 <= elapsed < BODY_S + MARGIN_S
    assert "Exception in ASGI application" not in server.log()
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


def test_a_trickled_body_is_cut_at_the_deadline(server: ServerProcess) -> None:
    """A byte every half second never trips the idle timeout, but the whole body has
    ``DEADLINE_S`` to arrive."""
    with connect(server, post_head(server, 1000) + b'{"input": "') as sock:
        started = time.monotonic()
        sock.settimeout(BODY_S / 4)
        raw = b""
        while time.monotonic() - started < DEADLINE_S + MARGIN_S:
            try:
                sock.sendall(b"a")
                raw += sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if raw and raw.endswith(b"}}"):
                break
        elapsed = time.monotonic() - started
    envelope(raw, 408, "request_timeout")
    assert DEADLINE_S * 0.8 <= elapsed < DEADLINE_S + MARGIN_S


BOUND, SLOW = 50, 60


def test_past_the_bound_a_newcomer_takes_the_place_of_the_oldest_slow_client(
    tmp_path: Path,
) -> None:
    """At the bound, connections opened while every other is young get 503 at once; once
    the slow ones have waited ``EVICT_AFTER_S`` for their heads, a newcomer is served at
    once, in the place of the one that waited longest (which gets its 408), long before
    the head timeout would have freed a place."""
    head_s = 30.0  # far beyond the test: only eviction can make room in time
    env = {**QUIET, "EMBEDGATE_CLIENT_HEADER_TIMEOUT": str(head_s),
           "EMBEDGATE_MAX_CONNECTIONS": str(BOUND)}  # fmt: skip
    with start_server(tmp_path / "data", env=env) as server, contextlib.ExitStack() as stack:
        slow = [stack.enter_context(connect(server, HALF_HEAD, timeout=0.5)) for _ in range(SLOW)]
        answered = _answered_at_once(slow, within=0.5)
        assert len(answered) == SLOW - BOUND
        for sock in answered:
            envelope(read_to_close(sock), 503, "too_many_connections")
        waiting = [sock for sock in slow if sock not in answered]
        time.sleep(EVICT_AFTER_S + 0.5)
        started = time.monotonic()
        served = httpx.get(f"{server.url}/health", timeout=10)
        assert served.status_code == 200, served.text
        assert time.monotonic() - started < 5  # at once, not after the head timeout
        evicted = _answered_at_once(waiting, within=2.0)
        assert evicted == waiting[:1]  # the oldest, and only it
        envelope(read_to_close(evicted[0]), 408, "request_timeout")


def _answered_at_once(socks: list[socket.socket], within: float) -> list[socket.socket]:
    """The connections that got an answer (or were closed) within ``within`` seconds."""
    answered: set[socket.socket] = set()
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([s for s in socks if s not in answered], [], [], left)
        answered.update(readable)
    return [sock for sock in socks if sock in answered]


def _served_within(server: ServerProcess, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return True
        time.sleep(0.2)
    return False


NOFILE = 256


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def test_under_a_low_open_file_limit_hundreds_of_slow_clients_lock_nobody_out(
    tmp_path: Path,
) -> None:
    """With ``ulimit -n 256``, 240 half-sent heads took every descriptor, for good: nobody
    else was served again. Now the connections past the bound are refused, and the others
    are cut after the head timeout."""
    env = {**QUIET, "EMBEDGATE_CLIENT_HEADER_TIMEOUT": "4"}
    with (
        start_server(tmp_path / "data", env=env, preexec_fn=_low_nofile) as server,
        contextlib.ExitStack() as stack,
    ):
        for _ in range(240):
            with contextlib.suppress(OSError):  # refused and closed at once is fine
                stack.enter_context(connect(server, HALF_HEAD, timeout=2))
        assert _served_within(server, 4 + MARGIN_S + 10)
        assert server.process.poll() is None
    assert "Too many open files" not in server.log()
