"""Run real `embedgate serve` processes for tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    data_dir: Path
    key: str = ""  # a tenant key, once the test has issued one

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_ready(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"embedgate serve exited early:\n{server.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"embedgate serve not ready after {timeout}s:\n{server.log()}")


@contextlib.contextmanager
def start_server(
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    preexec_fn: Callable[[], object] | None = None,
) -> Iterator[ServerProcess]:
    port = free_port()
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    command = [sys.executable, "-m", "embedgate", "serve", "--port", str(port), *(args or [])]
    full_env = {**os.environ, "EMBEDGATE_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env={**full_env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,  # e.g. a lower open-file limit
        )
    server = ServerProcess(process, port, log_path, data_dir)
    try:
        _wait_ready(server, timeout=120)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def spread_embeddings(servers: list[ServerProcess], key: str, count: int) -> list[int]:
    """``count`` concurrent one-text embedding requests spread over ``servers`` in turn; their
    statuses."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        responses = await asyncio.gather(*(
            client.post(f"{servers[i % len(servers)].url}/v1/embeddings",
                        json={"input": f"text {i}"})
            for i in range(count)
        ))  # fmt: skip
    return [r.status_code for r in responses]
