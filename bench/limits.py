"""What policy and limit checks add to an embeddings request, measured in one run.

    python bench/limits.py [--requests 2000] [--redis-url redis://127.0.0.1:6379/0]

Two in-process apps (SQLite in temp dirs), one with limits in memory and one on Redis. Each
has two tenants: `free` (no policy at all) and `limited` (allowed models, max dimensions,
an instruction allowlist, 20 blocked terms, rpm, tpm, key rpm, key tpm, concurrency and a
monthly quota, all high enough never to refuse). Both send the same 20-word text over and
over, so after the first request the embedding cache answers and the request does no model
work: what is left is HTTP, auth, checks and bookkeeping. Interleaved, so drift hits both
alike:

- `request_p50_ms` for each tenant, and `added_p50_ms`, the difference: what the checks add
  to a whole request;
- `checks_p50_ms`: the checks alone (effective policy, `enforce_request`, both phases of
  `Limits` admission and `Limits.finish`), timed around the calls.

Prints one JSON line; target: `added_p50_ms` and `checks_p50_ms` under 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from embedgate.app import create_app
from embedgate.config.settings import Settings
from embedgate.tenancy.auth import Caller
from embedgate.tenancy.policy import Policy, effective_policy, enforce_request

MODEL = "all-minilm-l6-v2"
INSTRUCTION = "Given a query, find passages"
LIMITED = Policy(
    allowed_models=[MODEL], max_dimensions=384, instruction_allowlist=[INSTRUCTION],
    blocked_terms=[f"codename-{i}" for i in range(20)], rpm=10**9, tpm=10**12,
    key_rpm=10**9, key_tpm=10**12, max_concurrency=10_000, monthly_token_quota=10**15,
)  # fmt: skip
TEXT = " ".join(f"word{i}" for i in range(20))


def log(message: str) -> None:
    print(f"[limits] {message}", file=sys.stderr, flush=True)


def p50_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 4)


async def measure(settings: Settings, requests: int) -> dict[str, Any]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        clients: dict[str, httpx.AsyncClient] = {}
        for tenant, policy in (("free", Policy()), ("limited", LIMITED)):
            await runtime.control.tenants.create(tenant, name=None, plan=None, policy=policy,
                                                 actor="bench")  # fmt: skip
            key = (await runtime.control.key_admin.create(tenant, actor="bench")).key
            clients[tenant] = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench",
                headers={"Authorization": f"Bearer {key}"},
            )  # fmt: skip
        caller = await runtime.control.auth.authenticate(
            clients["limited"].headers["authorization"].split()[1], "127.0.0.1"
        )
        timings: dict[str, list[float]] = {"free": [], "limited": [], "checks": []}

        async def once(kind: str) -> None:
            started = time.perf_counter()
            if kind == "checks":
                await checks(runtime, caller)
            else:
                response = await clients[kind].post("/v1/embeddings", json={"input": TEXT})
                assert response.status_code == 200, response.text
            timings[kind].append(time.perf_counter() - started)

        for _ in range(100):  # warm-up: caches, connection, code paths
            for kind in timings:
                await once(kind)
        timings = {kind: [] for kind in timings}
        for _ in range(requests):
            for kind in timings:
                await once(kind)
        for client in clients.values():
            await client.aclose()
    free, limited = p50_ms(timings["free"]), p50_ms(timings["limited"])
    return {
        "request_p50_ms_free": free,
        "request_p50_ms_limited": limited,
        "added_p50_ms": round(limited - free, 4),
        "checks_p50_ms": p50_ms(timings["checks"]),
    }


async def checks(runtime: Any, caller: Caller) -> None:
    policy = effective_policy(runtime.settings.plans, caller.tenant)
    enforce_request(policy, model=MODEL, dimensions=384, instruction=INSTRUCTION, texts=[TEXT])
    # The two phases of a request's admission (api/admission.py): before the body is read,
    # and once its 22 tokens are counted.
    request = await runtime.limits.admit_request(caller, spends_tokens=True)
    tokens = await runtime.limits.admit_tokens(caller, 22)
    await runtime.limits.finish(tokens, succeeded=True)
    await runtime.limits.finish(request, succeeded=True)


async def run(requests: int, redis_url: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "limits", "requests_each": requests, "target_ms": 1.0}
    backends: list[tuple[str, dict[str, Any]]] = [("memory", {})]
    prefix = f"embedgate-bench-{uuid.uuid4().hex[:8]}:"
    if redis_url:
        backends.append(("redis", {"redis_url": redis_url, "redis_key_prefix": prefix}))
    for name, extra in backends:
        with tempfile.TemporaryDirectory() as data:
            settings = Settings(data_dir=Path(data), admin_key="admin_bench_key_0123456789",
                                warmup=False, **extra)  # fmt: skip
            log(f"{name}: {requests} rounds")
            result[name] = await measure(settings, requests)
    if redis_url:
        client = aioredis.Redis.from_url(redis_url)
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    result["met"] = all(
        result[name][field] < 1.0 for name, _ in backends
        for field in ("added_p50_ms", "checks_p50_ms")
    )  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0",
                        help="Redis to measure shared limits on; '' to skip")  # fmt: skip
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.requests, args.redis_url or None))), flush=True)


if __name__ == "__main__":
    main()
