"""Soak: mixed embeddings and search traffic from several tenants, for a fixed time.

    python bench/soak.py [--seconds 300] [--clients 3] [--docs 300]
    python bench/soak.py --quick            # 30 s of soak, about 90 s in all

One real `embedgate serve` of this checkout (default settings, its own temp data dir) on
loopback, with four tenants of different policies (see TENANTS; `limited` has an `rpm` low
enough that its embedding requests get 429s, counted as such, not as failures). Each gets a
key and a collection of `--docs` corpus documents, ingested over HTTP first (not measured).
Then `--clients` closed-loop clients per tenant each cycle through their own pre-encoded
mix (see MIX) for `--seconds`, after a warm-up: /v1/embeddings with one text or 8 to 16,
float or base64; collection search in vector, keyword and hybrid mode; a document upsert
followed, when it succeeded, by the delete of that document; GET /v1/me.

Every `--sample-every` seconds the server's resident memory (VmRSS of its process) and its
embedding cache (`embedgate_embedding_cache_bytes` from /metrics) are sampled. The cache is
meant to fill up to EMBEDGATE_EMBEDDING_CACHE_MB, so memory is judged net of it: stable when
neither its growth (median of the last quarter of the samples minus that of the first) nor
the least-squares trend over the second half exceeds RSS_NOISE_MB (docs/benchmarks.md#soak).
`--mix` and `--env` change the weights and the server's environment, to isolate a finding.

Prints one JSON line; progress goes to stderr. `ok` is true when there was no 5xx, no
transport error, no 4xx other than 429, and memory was stable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import build_corpus
from loadgen import MixResult, Prepared, drive_mix, encode_request, percentile_ms
from throughput import ADMIN_KEY, Served, serve_process

MODEL = "all-minilm-l6-v2"
COLLECTION = "kb"
TENANTS: dict[str, dict[str, Any]] = {
    "open": {},  # the default plan: no limits at all
    "limited": {"rpm": 30, "tpm": 500_000},  # its embedding requests meet 429s
    "weighted": {"priority": 2.0, "max_concurrency": 32, "max_inputs_per_request": 64},
    "guarded": {
        "allowed_models": [MODEL], "max_dimensions": 384, "key_rpm": 100_000,
        "blocked_terms": [f"codename-{i}" for i in range(20)], "monthly_token_quota": 10**12,
    },
}  # fmt: skip
MIX = {
    "embed_one": 30, "embed_batch": 10, "search_vector": 20, "search_keyword": 15,
    "search_hybrid": 15, "upsert": 5, "me": 5,
}  # fmt: skip
FORMATS = ("float", "base64")  # of the embeddings, each request's drawn at random
# A server that does not grow still moves: samples every 5 s of one whose allocator was
# kept from fragmenting (docs/benchmarks.md#soak) had a standard deviation of 5 MB and
# jumped by up to 12 MB; medians of a quarter of the run differed by 5 MB.
RSS_NOISE_MB = 16.0


def log(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


# -- setup: tenants, keys, collections -------------------------------------------------


def admin(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    response = httpx.post(f"http://127.0.0.1:{port}{path}", json=body, headers=headers)
    response.raise_for_status()
    return dict(response.json())


def create_tenant(port: int, tenant: str, policy: dict[str, Any]) -> str:
    admin(port, "/admin/tenants", {"id": tenant, "policy": policy})
    return str(admin(port, f"/admin/tenants/{tenant}/keys", {"name": "soak"})["key"])


def ingest(port: int, key: str, texts: list[str]) -> None:
    """The tenant's collection, filled 64 documents a request; 429s waited out."""
    base = f"http://127.0.0.1:{port}/v1/collections"
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=300) as client:
        client.post(base, json={"name": COLLECTION}).raise_for_status()
        for start in range(0, len(texts), 64):
            docs = [{"id": f"doc-{i}", "text": texts[i], "metadata": {"part": i % 10}}
                    for i in range(start, min(start + 64, len(texts)))]  # fmt: skip
            for _ in range(20):
                response = client.post(f"{base}/{COLLECTION}/documents", json={"documents": docs})
                if response.status_code not in (429, 503):
                    break
                time.sleep(float(response.headers.get("retry-after", "1")))
            response.raise_for_status()


# -- the mix ---------------------------------------------------------------------------


@dataclass
class Pools:
    texts: list[str]
    queries: list[str]


def builders(port: int, key: str, tenant: str, client: int, pools: Pools, rng: random.Random
             ) -> dict[str, Callable[[int], Prepared]]:  # fmt: skip
    """For each kind of MIX, a function of a sequence number giving one prepared request."""
    docs = f"/v1/collections/{COLLECTION}/documents"

    def request(kind: str, method: str, path: str, body: dict[str, Any] | None = None,
                then: Prepared | None = None) -> Prepared:  # fmt: skip
        return Prepared(f"{tenant}/{kind}", encode_request(port, method, path, key, body), then)

    def embed(kind: str, inputs: str | list[str]) -> Prepared:
        body = {"model": MODEL, "input": inputs, "encoding_format": rng.choice(FORMATS)}
        return request(kind, "POST", "/v1/embeddings", body)

    def search(mode: str) -> Prepared:
        body = {"query": rng.choice(pools.queries), "top_k": 5, "mode": mode}
        return request(f"search_{mode}", "POST", f"/v1/collections/{COLLECTION}/search", body)

    def upsert(n: int) -> Prepared:
        doc = f"soak-{client}-{n}"  # this client's alone: its delete always finds it
        body = {"documents": [{"id": doc, "text": rng.choice(pools.texts),
                               "metadata": {"part": n % 10}}]}  # fmt: skip
        return request("upsert", "POST", docs, body, request("delete", "DELETE", f"{docs}/{doc}"))

    return {
        "embed_one": lambda n: embed("embed_one", rng.choice(pools.texts)),
        "embed_batch": lambda n: embed("embed_batch", rng.sample(pools.texts, rng.randint(8, 16))),
        "search_vector": lambda n: search("vector"),
        "search_keyword": lambda n: search("keyword"),
        "search_hybrid": lambda n: search("hybrid"),
        "upsert": upsert,
        "me": lambda n: request("me", "GET", "/v1/me"),
    }


def client_requests(port: int, key: str, tenant: str, client: int, pools: Pools,
                    args: argparse.Namespace) -> list[Prepared]:  # fmt: skip
    rng = random.Random(f"{tenant}-{client}")
    build = builders(port, key, tenant, client, pools, rng)
    kinds = rng.choices(list(args.mix), weights=list(args.mix.values()), k=args.prepared)
    return [build[kind](n) for n, kind in enumerate(kinds)]


# -- memory ----------------------------------------------------------------------------


@dataclass
class Sample:
    at_s: float  # into the measured window
    rss_mb: float
    cache_mb: float
    succeeded: int


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cache_mb(port: int) -> float:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (http only)
        for line in response.read().decode().splitlines():
            if line.startswith("embedgate_embedding_cache_bytes "):
                return float(line.split()[1]) / 2**20
    raise RuntimeError("no embedgate_embedding_cache_bytes in /metrics")


async def sample_memory(served: Served, result: MixResult, every: float) -> list[Sample]:
    """One sample every ``every`` seconds of the window, from its start to its end."""
    start, end = result.window
    times = [start + k * every for k in range(int((end - start) / every) + 1)]
    if end - times[-1] > every / 4:
        times.append(end - 0.05)
    samples: list[Sample] = []
    for at in times:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        try:
            cache = await asyncio.to_thread(cache_mb, served.port)
        except OSError as error:  # the last value stands in; a soak goes on
            log(f"/metrics failed: {error!r}")
            cache = samples[-1].cache_mb if samples else 0.0
        now = time.monotonic()
        samples.append(Sample(now - start, rss_mb(served.pid), cache, result.succeeded))
        if len(samples) % max(1, round(30 / every)) == 1:
            log(
                f"{now - start:5.0f} s: rss {samples[-1].rss_mb:.1f} MB, cache {cache:.1f} MB, "
                f"{result.succeeded} ok"
            )
    return samples


def memory_report(samples: list[Sample]) -> dict[str, Any]:
    """Start, end and max as sampled; the verdict on memory net of the embedding cache,
    from the medians of the first and last quarter of the samples (single samples jump by
    up to 12 MB) and from the least-squares trend over the second half."""
    first, last = samples[0], samples[-1]
    net = [(s.at_s, s.rss_mb - s.cache_mb) for s in samples]
    quarter = max(1, len(net) // 4)
    growth = statistics.median(m for _, m in net[-quarter:]) - statistics.median(
        m for _, m in net[:quarter]
    )
    half = [point for point in net if point[0] >= last.at_s / 2]
    slope = 0.0
    if len(half) >= 3:
        fit = statistics.linear_regression([t for t, _ in half], [m for _, m in half])
        slope = fit.slope * 60
    trend = slope * (half[-1][0] - half[0][0]) / 60  # what the trend adds over the half
    return {
        "rss_start_mb": round(first.rss_mb, 1), "rss_end_mb": round(last.rss_mb, 1),
        "rss_max_mb": round(max(s.rss_mb for s in samples), 1),
        "rss_growth_mb": round(last.rss_mb - first.rss_mb, 1),
        "cache_start_mb": round(first.cache_mb, 1), "cache_end_mb": round(last.cache_mb, 1),
        "rss_net_growth_mb": round(growth, 1), "rss_slope_mb_per_min": round(slope, 2),
        "rss_second_half_trend_mb": round(trend, 1), "rss_noise_mb": RSS_NOISE_MB,
        "rss_stable": growth <= RSS_NOISE_MB and trend <= RSS_NOISE_MB,
        "rss_samples": [[round(s.at_s, 1), round(s.rss_mb, 1), round(s.cache_mb, 1)]
                        for s in samples],
    }  # fmt: skip


# -- the report ------------------------------------------------------------------------


def status_class(status: str) -> str:
    if not status.isdigit():
        return "transport"  # the exception's name: the connection failed
    if status == "429":
        return "429"
    return {"2": "2xx", "4": "other_4xx", "5": "5xx"}.get(status[0], "other")


def grouped(result: MixResult, key: Callable[[str], str]) -> dict[str, dict[str, Any]]:
    """Statuses and 2xx latencies merged by ``key`` of the result's "tenant/kind"."""
    groups: dict[str, dict[str, Any]] = {}
    for name, counts in result.statuses.items():
        group = groups.setdefault(key(name), {"statuses": {}, "latencies": []})
        for status, n in counts.items():
            group["statuses"][status] = group["statuses"].get(status, 0) + n
        group["latencies"] += result.latencies.get(name, [])
    return groups


def summary(group: dict[str, Any], seconds: float) -> dict[str, Any]:
    latencies = group["latencies"]
    return {"per_s": round(len(latencies) / seconds, 1), "p50_ms": percentile_ms(latencies, 50),
            "p99_ms": percentile_ms(latencies, 99),
            "statuses": dict(sorted(group["statuses"].items()))}  # fmt: skip


def classes(result: MixResult) -> dict[str, int]:
    counts = dict.fromkeys(("2xx", "429", "other_4xx", "5xx", "transport", "other"), 0)
    for per_status in result.statuses.values():
        for status, n in per_status.items():
            counts[status_class(status)] += n
    return counts


def throughput(samples: list[Sample]) -> dict[str, float]:
    """2xx per second in each half of the window: does the server slow down over time?"""
    middle = min(samples, key=lambda s: abs(s.at_s - samples[-1].at_s / 2))
    first = middle.succeeded / middle.at_s
    second = (samples[-1].succeeded - middle.succeeded) / (samples[-1].at_s - middle.at_s)
    return {"per_s_first_half": round(first, 1), "per_s_second_half": round(second, 1)}


def report(result: MixResult, samples: list[Sample], served: Served,
           args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    counts = classes(result)
    memory = memory_report(samples)
    server_log = served.log.read_text(errors="replace")
    ok = counts["5xx"] == counts["transport"] == counts["other_4xx"] == counts["other"] == 0
    return {
        "bench": "soak", "ok": ok and memory["rss_stable"], "seconds": args.seconds,
        "warmup_s": args.warmup, "tenants": TENANTS, "clients_per_tenant": args.clients,
        "documents_per_tenant": args.docs, "mix": args.mix,
        "per_s": round(counts["2xx"] / args.seconds, 1),
        "responses_per_s": round(sum(counts.values()) / args.seconds, 1),
        **throughput(samples), "status_counts": counts, **memory,
        "server_log_tracebacks": server_log.count("Traceback"),
        "kinds": {kind: summary(group, args.seconds) for kind, group in
                  sorted(grouped(result, lambda name: name.split("/")[-1]).items())},
        "per_tenant": {tenant: summary(group, args.seconds) for tenant, group in
                         sorted(grouped(result, lambda name: name.split("/")[0]).items())},
    }  # fmt: skip


# -- main ------------------------------------------------------------------------------


async def measure(served: Served, clients: list[list[Prepared]], args: argparse.Namespace
                  ) -> tuple[MixResult, list[Sample]]:  # fmt: skip
    """The mixed load, and memory samples taken meanwhile."""
    result = MixResult.from_now(args.warmup, args.seconds)
    load = asyncio.create_task(drive_mix(served.port, clients, result))
    samples = await sample_memory(served, result, args.sample_every)
    await load
    return result, samples


def weights(text: str) -> dict[str, int]:
    mix = {kind: int(weight) for kind, weight in (item.split("=") for item in text.split(","))}
    if set(mix) - set(MIX):
        raise argparse.ArgumentTypeError(f"kinds are {', '.join(MIX)}")
    return mix


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="measured soak time")
    parser.add_argument("--warmup", type=float, default=20.0, help="mixed load before it")
    parser.add_argument("--clients", type=int, default=3, help="closed-loop clients per tenant")
    parser.add_argument("--docs", type=int, default=300, help="documents per tenant")
    parser.add_argument("--texts", type=int, default=20_000, help="distinct texts to send")
    parser.add_argument("--prepared", type=int, default=2_000, help="requests per client")
    parser.add_argument("--sample-every", type=float, default=5.0, help="memory, in seconds")
    parser.add_argument("--quick", action="store_true", help="30 s, smaller everything")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the server")  # fmt: skip
    parser.add_argument("--mix", type=weights, default=MIX,
                        help="KIND=WEIGHT,... instead of MIX")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.docs, args.sample_every = 30.0, 5.0, 200, 2.0
        args.texts, args.prepared = 5_000, 500
    return args


def main() -> None:
    args = arguments()
    texts = build_corpus(args.texts, seed=21)
    pools = Pools(texts, [t for t in texts if len(t.split()) <= 20])
    with serve_process("soak", dict(item.split("=", 1) for item in args.env)) as served:
        clients = []
        for index, (tenant, policy) in enumerate(TENANTS.items()):
            key = create_tenant(served.port, tenant, policy)
            ingest(served.port, key, build_corpus(args.docs, seed=100 + index))
            log(f"tenant {tenant}: {args.docs} documents ingested")
            clients += [client_requests(served.port, key, tenant, c, pools, args)
                        for c in range(args.clients)]  # fmt: skip
        log(f"{len(clients)} clients: {args.warmup:.0f} s warm-up, {args.seconds:.0f} s soak")
        result, samples = asyncio.run(measure(served, clients, args))
        print(json.dumps(report(result, samples, served, args)), flush=True)


if __name__ == "__main__":
    main()
