"""What API-key authentication and policy checks add to a request, measured in one run.

    python bench/auth.py [--requests 3000]

On the real app (in-process, SQLite in a temp dir), and interleaved so drift hits all
alike: the full request GET /v1/models with its tenant key, and the auth dependency that
request runs (parse the header, HMAC the key, look up key and tenant), timed alone, warm
(key and tenant cached: every request but the first per key every 2 s) and cold (caches
emptied: a digest lookup and a tenant lookup in the database); and the policy checks of an
embeddings request (effective policy from plan and overrides, model, dimensions,
instruction allowlist, 20 blocked terms over a 100-word input). Prints one JSON
line; targets: auth, and policy checks, each under 1 ms at p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request

from embedgate.api.deps import authenticate
from embedgate.app import create_app
from embedgate.config.settings import Settings
from embedgate.tenancy.policy import Policy, effective_policy, enforce_request


def p50_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


async def run(requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data:
        app = create_app(Settings(data_dir=Path(data), admin_key="admin_bench_key_0123456789"))
        async with app.router.lifespan_context(app):
            control = app.state.runtime.control
            await control.tenants.create("bench", name=None, plan=None, policy=Policy(),
                                         actor="bench")  # fmt: skip
            issued = await control.key_admin.create("bench", actor="bench")
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {issued.key}"}
            scope = {
                "type": "http", "method": "GET", "path": "/v1/models", "app": app,
                "headers": [(b"authorization", headers["Authorization"].encode())],
                "client": ("127.0.0.1", 50000),
            }  # fmt: skip
            timings: dict[str, list[float]] = {
                "request": [], "warm": [], "cold": [], "policy": []
            }  # fmt: skip
            plans = {"default": Policy(max_dimensions=384, allowed_models=["all-minilm-l6-v2"])}
            tenant = await control.tenants.update(
                "bench", actor="bench", policy=Policy(
                    blocked_terms=[f"codename-{i}" for i in range(20)],
                    instruction_allowlist=["Given a query, find passages"],
                ),
            )  # fmt: skip
            text = " ".join(f"word{i}" for i in range(100))
            async with httpx.AsyncClient(transport=transport, base_url="http://b",
                                         headers=headers) as client:  # fmt: skip

                async def once(kind: str) -> None:
                    if kind == "cold":
                        control.keys._cache.clear()
                        control.auth._tenants.clear()
                    started = time.perf_counter()
                    if kind == "policy":
                        enforce_request(
                            effective_policy(plans, tenant), model="all-minilm-l6-v2",
                            dimensions=384, instruction="Given a query, find passages",
                            texts=[text],
                        )  # fmt: skip
                    elif kind == "request":
                        response = await client.get("/v1/models")
                        assert response.status_code == 200, response.text
                    else:
                        await authenticate(Request(scope))
                    timings[kind].append(time.perf_counter() - started)

                for _ in range(200):  # warm-up
                    await once("request")
                timings = {kind: [] for kind in timings}
                for _ in range(requests):
                    for kind in ("request", "warm", "cold", "policy"):
                        await once(kind)
    return {
        "bench": "auth",
        "requests_each": requests,
        "request_p50_ms": p50_ms(timings["request"]),
        "auth_warm_p50_ms": p50_ms(timings["warm"]),
        "auth_cold_p50_ms": p50_ms(timings["cold"]),
        "policy_checks_p50_ms": p50_ms(timings["policy"]),
        "target_p50_ms": 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.requests))), flush=True)


if __name__ == "__main__":
    main()
