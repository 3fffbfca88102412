"""Fair scheduling: one tenant's latency while another floods the model, fair vs fifo.

    python bench/fairness.py [--rounds 3] [--requests 300] [--flood-seconds 60]

Two real `embedgate serve` processes of this checkout, started side by side, one with
`EMBEDGATE_SCHEDULING=fair` and one with `fifo`, each with two tenants of the default plan
(weight 1). On each, in turn:

- alone: the light tenant's one client sends one text per request, sequentially
  (`--requests` of them), while nothing else runs: its p50 and p99 latency;
- flood: the heavy tenant's 32 clients each keep one request of 8 to 16 texts in flight
  (the model's queue never empties), and after a warm-up the light tenant sends the same
  sequential stream, for at most `--flood-seconds` (behind a fifo queue each request waits
  for the whole backlog, so fifo gets fewer samples): its p50 and p99, and the texts/s the
  heavy tenant got meanwhile.

The figure of merit is light p99 under flood / light p99 alone; target for fair: <= 2.0.
Prints one JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import build_corpus
from loadgen import REQUEST_TIMEOUT_S, post_requests, read_response
from throughput import issue_key, serve

ROOT = Path(__file__).resolve().parent.parent
MODEL = "all-minilm-l6-v2"
HEAVY_CLIENTS = 32


def log(message: str) -> None:
    print(f"[fairness] {message}", file=sys.stderr, flush=True)


@dataclass
class Server:
    port: int
    keys: dict[str, str]  # tenant id -> its API key


@contextlib.contextmanager
def server(scheduling: str, extra_env: dict[str, str]) -> Iterator[Server]:
    """A real `embedgate serve` on a free loopback port, with tenants `light` and `heavy`."""
    env = {
        # No embedding cache: every text must reach the scheduler being measured.
        "EMBEDGATE_EMBEDDING_CACHE_MB": "0", **extra_env, "EMBEDGATE_SCHEDULING": scheduling,
    }  # fmt: skip
    with serve(scheduling, env) as port:
        yield Server(port, {t: issue_key(port, t) for t in ("light", "heavy")})


@dataclass
class Flood:
    """The heavy tenant's clients; counts the texts answered from ``since`` on."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    since: float = float("inf")
    texts: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def record(self, status: int, n_texts: int) -> None:
        if status != 200:
            self.errors[f"HTTP {status}"] = self.errors.get(f"HTTP {status}", 0) + 1
        elif time.monotonic() >= self.since:
            self.texts += n_texts


async def heavy_client(port: int, requests: Sequence[tuple[bytes, int]], flood: Flood) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    index = random.randrange(len(requests))
    try:
        while not flood.stop.is_set():
            request, n_texts = requests[index % len(requests)]
            index += 1
            writer.write(request)
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, _ = await read_response(reader)
            flood.record(status, n_texts)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def light_stream(port: int, requests: Sequence[bytes], until: float) -> list[float]:
    """Latencies of ``requests`` sent one after the other (stops early at ``until``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies: list[float] = []
    try:
        for request in requests:
            if time.monotonic() >= until:
                break
            started = time.monotonic()
            writer.write(request)
            status, body = await read_response(reader)
            if status != 200 or b'"embedding"' not in body:
                raise RuntimeError(f"light request failed: HTTP {status} {body[:200]!r}")
            latencies.append(time.monotonic() - started)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return latencies


def percentile_ms(latencies: list[float], q: int) -> float:
    if len(latencies) < 2:
        return round(1000 * latencies[0], 1) if latencies else 0.0
    return round(1000 * statistics.quantiles(latencies, n=100, method="inclusive")[q - 1], 1)


def summary(latencies: list[float]) -> dict[str, Any]:
    return {
        "p50_ms": percentile_ms(latencies, 50),
        "p99_ms": percentile_ms(latencies, 99),
        "n": len(latencies),
    }


@dataclass
class Workload:
    alone: list[bytes]  # the light tenant's texts alone, and under flood: different texts
    flooded: list[bytes]  # of the same mix, so that no cache anywhere can answer
    heavy: list[tuple[bytes, int]]  # request, texts in it
    warmup: list[bytes]


def workload(target: Server, args: argparse.Namespace) -> Workload:
    texts = build_corpus(args.texts)
    rng = random.Random(1)

    def body(inputs: str | list[str]) -> dict[str, object]:
        return {"model": MODEL, "input": inputs, "encoding_format": "base64"}

    light_texts = build_corpus(args.requests * 2 + 10, seed=7)  # warm-up, alone, flood
    light = post_requests(target.port, "/v1/embeddings", [body(t) for t in light_texts],
                          target.keys["light"])  # fmt: skip
    groups = [rng.sample(texts, rng.randint(8, 16)) for _ in range(400)]
    encoded = post_requests(target.port, "/v1/embeddings", [body(g) for g in groups],
                            target.keys["heavy"])  # fmt: skip
    heavy = [(request, len(g)) for request, g in zip(encoded, groups, strict=True)]
    n = args.requests
    return Workload(alone=light[10 : 10 + n], flooded=light[10 + n :], heavy=heavy,
                    warmup=light[:10])  # fmt: skip


async def measure(target: Server, args: argparse.Namespace) -> dict[str, Any]:
    load = workload(target, args)
    await light_stream(target.port, load.warmup, until=float("inf"))
    alone = await light_stream(target.port, load.alone, until=float("inf"))
    flood = Flood()
    clients = [
        asyncio.create_task(heavy_client(target.port, load.heavy, flood))
        for _ in range(HEAVY_CLIENTS)
    ]
    await asyncio.sleep(args.flood_warmup)
    flood.since = started = time.monotonic()
    flooded = await light_stream(target.port, load.flooded, until=started + args.flood_seconds)
    elapsed = time.monotonic() - started
    heavy_texts = flood.texts
    flood.stop.set()
    for outcome in await asyncio.gather(*clients, return_exceptions=True):
        if isinstance(outcome, BaseException):
            flood.errors[type(outcome).__name__] = flood.errors.get(type(outcome).__name__, 0) + 1
    result = {
        "light_alone": summary(alone),
        "light_flood": summary(flooded),
        "heavy_texts_per_s": round(heavy_texts / elapsed, 1),
        "heavy_errors": flood.errors,
    }
    result["p99_ratio"] = round(
        result["light_flood"]["p99_ms"] / max(result["light_alone"]["p99_ms"], 0.1), 2
    )
    return result


def median_of(rounds: list[dict[str, Any]], mode: str, *keys: str) -> float:
    values = []
    for entry in rounds:
        value: Any = entry[mode]
        for key in keys:
            value = value[key]
        values.append(float(value))
    return round(statistics.median(values), 2)


def report(rounds: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"bench": "fairness", "model": MODEL}
    for mode in rounds[0]:
        out[f"{mode}_p99_ratio"] = median_of(rounds, mode, "p99_ratio")
        out[f"{mode}_light_alone_p99_ms"] = median_of(rounds, mode, "light_alone", "p99_ms")
        out[f"{mode}_light_flood_p50_ms"] = median_of(rounds, mode, "light_flood", "p50_ms")
        out[f"{mode}_light_flood_p99_ms"] = median_of(rounds, mode, "light_flood", "p99_ms")
        out[f"{mode}_heavy_texts_per_s"] = median_of(rounds, mode, "heavy_texts_per_s")
    import torch

    out |= {
        "target_fair_p99_ratio": 2.0,
        "requests": args.requests,
        "heavy_clients": HEAVY_CLIENTS,
        "rounds": rounds,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300, help="light requests per phase")
    parser.add_argument("--flood-seconds", type=float, default=60.0,
                        help="most time for the light stream under flood")  # fmt: skip
    parser.add_argument("--flood-warmup", type=float, default=3.0)
    parser.add_argument("--texts", type=int, default=2000, help="corpus size")
    parser.add_argument("--modes", default="fair,fifo", help="schedulings to measure")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra server setting, for both servers")  # fmt: skip
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    rounds: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        modes = args.modes.split(",")
        targets = {mode: stack.enter_context(server(mode, extra)) for mode in modes}
        for index in range(args.rounds):
            entry = {mode: asyncio.run(measure(target, args)) for mode, target in targets.items()}
            log(f"round {index + 1}: {json.dumps(entry)}")
            rounds.append(entry)
    print(json.dumps(report(rounds, args)), flush=True)


if __name__ == "__main__":
    main()
