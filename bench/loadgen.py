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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

REQUEST_TIMEOUT_S = 120.0


def post_requests(
    port: int, path: str, bodies: Sequence[Mapping[str, object]], key: str
) -> list[bytes]:
    """One complete, pre-encoded HTTP/1.1 POST per JSON body."""
    return [encode_request(port, "POST", path, key, body) for body in bodies]


def encode_request(
    port: int, method: str, path: str, key: str, body: Mapping[str, object] | None = None
) -> bytes:
    """One complete, pre-encoded HTTP/1.1 request, with a JSON body or none."""
    payload = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode("latin-1") + payload


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one Content-Length-framed response (what uvicorn sends here)."""
    status = int((await reader.readuntil(b"\r\n")).split(None, 2)[1])
    length = 0
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


class CpuShare:
    """This process's CPU time over wall time (1.0 = one core)."""

    def __enter__(self) -> CpuShare:
        self._cpu, self._wall = time.process_time(), time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.share = (time.process_time() - self._cpu) / (time.monotonic() - self._wall)


@dataclass
class LoadResult:
    window: tuple[float, float]  # monotonic start and end of the measured window
    ok: int = 0
    units: float = 0.0  # what the completed requests were worth (run_load's ``units``)
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.ok / (self.window[1] - self.window[0])

    @property
    def units_per_s(self) -> float:
        return self.units / (self.window[1] - self.window[0])

    def record(
        self, finished: float, latency: float, error: str | None, units: float = 1.0
    ) -> None:
        if not self.window[0] <= finished < self.window[1]:
            return  # warm-up or drain
        if error is not None:
            self.errors[error] = self.errors.get(error, 0) + 1
            return
        self.ok += 1
        self.units += units
        self.latencies.append(latency)

    def percentile_ms(self, q: int) -> float:
        if len(self.latencies) < 2:
            return 0.0
        return 1000 * statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]


async def _client(
    port: int, requests: Sequence[bytes], offset: int, stride: int, result: LoadResult,
    expect: bytes, units: Sequence[float] | None,
) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    index = offset
    try:
        while time.monotonic() < result.window[1]:
            started = time.monotonic()
            at = index % len(requests)
            writer.write(requests[at])
            index += stride
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, body = await read_response(reader)
            finished = time.monotonic()
            ok = status == 200 and expect in body
            result.record(finished, finished - started, None if ok else f"HTTP {status}",
                          1.0 if units is None else units[at])  # fmt: skip
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def run_load(
    port: int, requests: Sequence[bytes], *, concurrency: int, seconds: float,
    warmup: float = 2.0, expect: bytes = b'"embedding"', units: Sequence[float] | None = None,
) -> LoadResult:  # fmt: skip
    """``concurrency`` clients in a closed loop; counts what completes in a ``seconds`` window
    after ``warmup`` seconds of load (a response counts when 200 and holding ``expect``),
    and what it was worth: ``units[i]`` for ``requests[i]`` (say its tokens), else 1."""
    if units is not None and len(units) != len(requests):
        raise ValueError("units must give one value per request")
    start = time.monotonic() + warmup
    result = LoadResult(window=(start, start + seconds))
    clients = [_client(port, requests, i, concurrency, result, expect, units)
               for i in range(concurrency)]  # fmt: skip
    for outcome in await asyncio.gather(*clients, return_exceptions=True):
        if isinstance(outcome, BaseException):
            key = type(outcome).__name__
            result.errors[key] = result.errors.get(key, 0) + 1
    return result


# -- a mix of requests ---------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """One pre-encoded request of a mix, counted under ``kind``; ``then`` goes next on the
    same connection when this one succeeds (deleting the document it wrote, say)."""

    kind: str
    data: bytes
    then: Prepared | None = None


@dataclass
class MixResult:
    """Per kind: responses by status ("200", "429", ...; an exception's name when the
    connection failed) and the latencies of the 2xx ones, within the measured window."""

    window: tuple[float, float]
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    succeeded: int = 0  # 2xx in the window so far: samplers read it while the load runs

    @classmethod
    def from_now(cls, warmup: float, seconds: float) -> MixResult:
        start = time.monotonic() + warmup
        return cls(window=(start, start + seconds))

    def record(self, kind: str, finished: float, latency: float, status: str) -> None:
        if not self.window[0] <= finished < self.window[1]:
            return  # warm-up or drain
        counts = self.statuses.setdefault(kind, {})
        counts[status] = counts.get(status, 0) + 1
        if status.startswith("2"):
            self.succeeded += 1
            self.latencies.setdefault(kind, []).append(latency)


TRANSPORT_ERRORS = (
    OSError, EOFError, TimeoutError, ValueError, asyncio.LimitOverrunError,
)  # fmt: skip


async def _mix_client(
    port: int, requests: Sequence[Prepared], result: MixResult, backoff: float
) -> None:
    """Sends ``requests`` in a loop until the window closes; a failed connection is counted
    and opened again, a 429 waits ``backoff`` seconds (as a client honouring Retry-After)."""
    index = 0
    while time.monotonic() < result.window[1]:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as error:
            result.record("connect", time.monotonic(), 0.0, type(error).__name__)
            await asyncio.sleep(1.0)
            continue
        try:
            while time.monotonic() < result.window[1]:
                status = await _chain(reader, writer, requests[index % len(requests)], result)
                index += 1
                if status == "429":
                    await asyncio.sleep(backoff)
        except TRANSPORT_ERRORS:
            pass  # counted by _exchange; a fresh connection follows
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _chain(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, item: Prepared,
    result: MixResult,
) -> str:  # fmt: skip
    """``item`` and, while each succeeds, what it says comes next; the last status."""
    status = await _exchange(reader, writer, item, result)
    while item.then is not None and status.startswith("2"):
        item = item.then
        status = await _exchange(reader, writer, item, result)
    return status


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, item: Prepared,
    result: MixResult,
) -> str:  # fmt: skip
    started = time.monotonic()
    try:
        writer.write(item.data)
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            status = str((await read_response(reader))[0])
    except TRANSPORT_ERRORS as error:
        result.record(item.kind, time.monotonic(), 0.0, type(error).__name__)
        raise
    finished = time.monotonic()
    result.record(item.kind, finished, finished - started, status)
    return status


async def run_mix(
    port: int, clients: Sequence[Sequence[Prepared]], *, seconds: float, warmup: float = 2.0,
    backoff: float = 0.25,
) -> MixResult:  # fmt: skip
    """One closed-loop client per sequence in ``clients``, each cycling through its own
    requests; counts what completes in a ``seconds`` window after ``warmup`` seconds."""
    result = MixResult.from_now(warmup, seconds)
    await drive_mix(port, clients, result, backoff)
    return result


async def drive_mix(
    port: int, clients: Sequence[Sequence[Prepared]], result: MixResult, backoff: float = 0.25
) -> None:
    """``run_mix`` into a given result, which others may watch meanwhile."""
    await asyncio.gather(*(_mix_client(port, c, result, backoff) for c in clients))


def percentile_ms(latencies: Sequence[float], q: int) -> float:
    if len(latencies) < 2:
        return round(1000 * latencies[0], 1) if latencies else 0.0
    return round(1000 * statistics.quantiles(latencies, n=100, method="inclusive")[q - 1], 1)
