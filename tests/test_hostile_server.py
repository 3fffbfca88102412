"""Hostile input at the HTTP layer of a real `embedgate serve` (uvicorn + httptools): what
only a real server sees. Oversized heads, malformed HTTP, raw bytes and bodies over the limit
get a 4xx in the OpenAI envelope, promptly, and never hang the server or reset the client.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, issue_key
from tests.helpers import ServerProcess, start_server

pytestmark = pytest.mark.slow
LIMIT = 1024 * 1024  # EMBEDGATE_MAX_REQUEST_BYTES of this module's server
HEAD_LIMIT = 64 * 1024  # embedgate.api.protocol.MAX_HEAD_BYTES


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"EMBEDGATE_ADMIN_KEY": ADMIN_KEY, "EMBEDGATE_MAX_REQUEST_BYTES": str(LIMIT),
           "EMBEDGATE_WARMUP": "false"}  # fmt: skip
    with start_server(tmp_path_factory.mktemp("hostile-server") / "data", env=env) as started:
        started.key = issue_key(started.url)
        made = httpx.post(f"{started.url}/v1/collections", json={"name": "kb"},
                          headers={"Authorization": f"Bearer {started.key}"})  # fmt: skip
        made.raise_for_status()
        yield started


class Answer:
    def __init__(self, raw: bytes) -> None:
        head, sep, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        length = int(self.headers.get("content-length", "0"))
        self.complete = bool(sep) and len(self.body) >= length

    def error(self, status: int, code: str) -> dict[str, Any]:
        assert self.status == status, self.body
        assert self.headers["content-type"] == "application/json"
        error: dict[str, Any] = json.loads(self.body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["code"], error["param"]) == (code, None)
        return error


def exchange(server: ServerProcess, *requests: bytes) -> list[Answer]:
    """Send the requests one after the other on one kept-alive connection; their answers.

    After an answer with `connection: close` the server must close its side at once."""
    answers: list[Answer] = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        for request in requests:
            sock.sendall(request)
            received = b""
            while not (b"\r\n\r\n" in received and Answer(received).complete):
                chunk = sock.recv(65536)
                assert chunk, f"closed without an answer: {received[:300]!r}"
                received += chunk
            answers.append(Answer(received))
        if answers[-1].headers.get("connection") == "close":
            assert sock.recv(65536) == b""
    return answers


def get(path: str, *headers: bytes) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(headers) + b"\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        get("/health", b"X-Big: " + b"a" * 100_000 + b"\r\n"),
        get("/health", *(b"X-H%d: %s\r\n" % (i, b"v" * 30) for i in range(2500))),
        get("/health?" + "q" * 100_000),
        get("/health", b"X-Huge: " + b"a" * 20_000_000 + b"\r\n"),  # 200 MB took 2 min of CPU
    ],
    ids=["one-100kb-header", "2500-headers", "100kb-url", "one-20mb-header"],
)
def test_heads_over_64_kib_are_431(server: ServerProcess, request_bytes: bytes) -> None:
    started = time.monotonic()
    (answer,) = exchange(server, request_bytes)
    error = answer.error(431, "request_header_too_large")
    assert error["type"] == "invalid_request_error"
    assert "65536 bytes" in error["message"]
    assert answer.headers["connection"] == "close"
    assert time.monotonic() - started < 10
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_heads_under_the_limit_and_bodies_are_not_counted(server: ServerProcess) -> None:
    near = get("/health", b"X-Big: " + b"a" * (HEAD_LIMIT - 200) + b"\r\n")
    body = json.dumps({"input": "hello", "user": "u" * (LIMIT - 100)}).encode()
    post = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + server.key.encode() + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
    assert [a.status for a in exchange(server, near, post, get("/health"))] == [200, 200, 200]


def test_each_head_of_a_kept_alive_connection_is_counted(server: ServerProcess) -> None:
    big = get("/health", b"X-Big: " + b"a" * HEAD_LIMIT + b"\r\n")
    first, second = exchange(server, get("/health"), big)
    assert first.status == 200
    second.error(431, "request_header_too_large")


@pytest.mark.parametrize(
    "request_bytes",
    [
        get("/health", b"X-Nul: a\x00b\r\n"),
        b"GET /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ],
    ids=["nul-in-header", "raw-bytes-in-path", "length-and-chunked", "negative-length", "garbage"],
)
def test_malformed_http_is_400_in_the_envelope(server: ServerProcess, request_bytes: bytes) -> None:
    (answer,) = exchange(server, request_bytes)
    answer.error(400, "invalid_http_request")
    assert answer.headers["connection"] == "close"


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(
    server: ServerProcess,
) -> None:
    head = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(LIMIT + 1).encode() + b"\r\n\r\n")  # fmt: skip
    (answer,) = exchange(server, head)
    answer.error(413, "request_too_large")


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/v1/embeddings", b'{"input": "'),
        ("/v1/collections/kb/documents", b'{"documents": [{"text": "'),  # was a 400
        ("/v1/collections/kb/search", b'{"query": "'),  # was a 400
    ],
)
def test_a_chunked_body_over_the_limit_is_413(
    server: ServerProcess, path: str, prefix: bytes
) -> None:
    def chunks() -> Iterator[bytes]:
        yield prefix
        for _ in range(LIMIT // 65536 + 2):
            yield b"x" * 65536
        yield b'"}]}'

    auth = {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"}
    response = httpx.post(f"{server.url}{path}", content=chunks(), headers=auth, timeout=30)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_too_large"


def test_raw_bytes_in_the_body_and_headers(server: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"}
    for body in (b'{"input": "\xff\xfe"}', b'{"input": "\xed\xa0\x80"}', b"\x00\x01\x02"):
        response = httpx.post(f"{server.url}/v1/embeddings", content=body, headers=auth)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "invalid_json"
    (answer,) = exchange(server, get("/v1/me", b"Authorization: Bearer \xff\xfe\xfd\r\n"))
    answer.error(401, "invalid_api_key")


def test_a_stalled_head_does_not_hold_up_others(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as stalled:
        stalled.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 30_000)
        started = time.monotonic()
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
        assert time.monotonic() - started < 5
