"""A lean closed-loop HTTP/1.1 load generator for benchmarks, on loopback only.

Each client holds one keep-alive connection and sends pre-encoded requests one after the
other, so the generator costs almost no CPU next to the server it measures (httpx would
cost about as much CPU per request as the server spends).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

REQUEST_TIMEOUT_S = 120.0


def post_requests(
    port: int, path: str, bodies: Sequence[dict[str, object]], key: str
) -> list[bytes]:
    """One complete, pre-encoded HTTP/1.1 POST per JSON body."""
    out = []
    for body in bodies:
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        out.append(head.encode("latin-1") + payload)
    return out


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one Content-Length-framed response (what uvicorn sends here)."""
    status = int((await reader.readuntil(b"\r\n")).split(None, 2)[1])
    length = 0
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


@dataclass
class LoadResult:
    window: tuple[float, float]  # monotonic start and end of the measured window
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.ok / (self.window[1] - self.window[0])

    def record(self, finished: float, latency: float, error: str | None) -> None:
        if not self.window[0] <= finished < self.window[1]:
            return  # warm-up or drain
        if error is not None:
            self.errors[error] = self.errors.get(error, 0) + 1
            return
        self.ok += 1
        self.latencies.append(latency)

    def percentile_ms(self, q: float) -> float:
        if len(self.latencies) < 2:
            return 0.0
        return 1000 * statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]


async def _client(
    port: int, requests: Sequence[bytes], offset: int, stride: int, result: LoadResult,
    expect: bytes,
) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    index = offset
    try:
        while time.monotonic() < result.window[1]:
            started = time.monotonic()
            writer.write(requests[index % len(requests)])
            index += stride
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, body = await read_response(reader)
            finished = time.monotonic()
            ok = status == 200 and expect in body
            result.record(finished, finished - started, None if ok else f"HTTP {status}")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def run_load(
    port: int, requests: Sequence[bytes], *, concurrency: int, seconds: float,
    warmup: float = 2.0, expect: bytes = b'"embedding"',
) -> LoadResult:  # fmt: skip
    """``concurrency`` clients in a closed loop; counts what completes in a ``seconds`` window
    after ``warmup`` seconds of load (a response counts when 200 and holding ``expect``)."""
    start = time.monotonic() + warmup
    result = LoadResult(window=(start, start + seconds))
    clients = [_client(port, requests, i, concurrency, result, expect) for i in range(concurrency)]
    for outcome in await asyncio.gather(*clients, return_exceptions=True):
        if isinstance(outcome, BaseException):
            key = type(outcome).__name__
            result.errors[key] = result.errors.get(key, 0) + 1
    return result
