"""Hostile tenants: a light tenant's latency alone and while another tenant attacks.

    python bench/hostile.py [--rounds 3] [--seconds 6] [--attacks body_flood,slow_heads]

One real `embedgate serve` of this checkout (bundled model, embedded store, no embedding
cache so that every text is model work, RLIMIT_NOFILE `--server-nofile`), a light tenant
without limits, and one attacker tenant per attack of issue 13 (ATTACKS below; the attacks
themselves are in hostile_attacks.py, run in a process of their own):

- body_flood (point 2a): rpm 0 and quota 0, sending 55 MiB bodies of token ids;
- token_flood (point 2b): no limits, 2048 x "word " * 6000 per request;
- store_flood (point 3): rpm 2, max_concurrency 1, 100 connections of keyword searches
  (top_k 1000) and listings on its own collection of `--store-docs` documents, and
  metadata-only 1 MB upserts;
- queue_flood (point 4): no limits, 16 connections of valid 2048-input requests;
- slow_heads (point 5): `--slow-connections` connections from 127.0.0.2 that send half a
  request head and hold it.

The light tenant's `--light-clients` clients each open a new connection per request (so a
server that stops accepting connections shows), one every `--light-interval` seconds:
/v1/embeddings requests of 1 to 5 short texts and GET /v1/collections/small, and one in
twenty a request of 16 RAG chunks (9 KB, which goes through the tokenizer thread): CYCLE.
For each attack, in each of `--rounds` rounds: the light tenant alone for `--seconds`,
then the attack (after `--attack-warmup` seconds of it) for as long, then a wait until the
server is idle again. Figures are medians over the rounds; the light tenant's p99 is over
all its requests of a phase; its errors (non-2xx answers, failed connections, no answer
within `--light-timeout`) count as that timeout in it. Target: light p99 under every
attack within 2x of alone, and no light error.
Prints one JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import build_corpus
from hostile_attacks import STORE_COLLECTION, store_text
from hostile_wire import close, connect, exchange
from loadgen import encode_request, percentile_ms
from throughput import ADMIN_KEY, Served, serve_process

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 2.0
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass(frozen=True)
class Attack:
    point: str
    tenant: str
    policy: dict[str, Any]  # set once the tenant's data is in place
    concurrency: str | int  # connections, or the flag that gives them


ATTACKS = {
    "body_flood": Attack("2a", "atk-body", {"rpm": 0, "monthly_token_quota": 0}, 2),
    "token_flood": Attack("2b", "atk-tokens", {}, 2),
    "store_flood": Attack("3", "atk-store", {"rpm": 2, "max_concurrency": 1}, 100),
    "queue_flood": Attack("4", "atk-queue", {}, 16),
    "slow_heads": Attack("5", "atk-slow", {}, "slow_connections"),
}


def log(message: str) -> None:
    print(f"[hostile] {message}", file=sys.stderr, flush=True)


# -- the server and its tenants --------------------------------------------------------------


@contextlib.contextmanager
def server(args: argparse.Namespace) -> Iterator[Served]:
    """`embedgate serve` with a file limit of its own (as `ulimit -n` would give it)."""
    env = {"EMBEDGATE_EMBEDDING_CACHE_MB": "0", **dict(e.split("=", 1) for e in args.env)}
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    if args.server_nofile:  # inherited by the server; the bench's own is restored at once
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(args.server_nofile, limits[1]), limits[1]))
    try:
        with serve_process("hostile", env) as served:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            yield served
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One setup request; 429 and 503 are waited out (setup runs before any limit)."""
    for _ in range(30):
        response = client.request(method, path, **kwargs)
        if response.status_code not in (429, 503):
            break
        time.sleep(1.0)
    if response.status_code >= 300:
        raise RuntimeError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")
    return dict(response.json())


def tenant(client: httpx.Client, tenant_id: str) -> str:
    call(client, "POST", "/admin/tenants", json={"id": tenant_id}, headers=ADMIN)
    return str(call(client, "POST", f"/admin/tenants/{tenant_id}/keys", json={},
                    headers=ADMIN)["key"])  # fmt: skip


def setup(port: int, attacks: Sequence[str], store_docs: int) -> dict[str, str]:
    """The tenants' keys; the light tenant's small collection; the store attacker's big
    one, written before its limits are set."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
        keys = {"light": tenant(client, "light")}
        light = {"Authorization": f"Bearer {keys['light']}"}
        call(client, "POST", "/v1/collections", json={"name": "small"}, headers=light)
        docs = [{"id": f"s{i}", "text": t} for i, t in enumerate(build_corpus(5, seed=3))]
        call(client, "POST", "/v1/collections/small/documents", json={"documents": docs},
             headers=light)  # fmt: skip
        for name in attacks:
            attack = ATTACKS[name]
            keys[name] = tenant(client, attack.tenant)
            if name == "store_flood":
                fill_store(client, keys[name], store_docs)
            if attack.policy:
                call(client, "PATCH", f"/admin/tenants/{attack.tenant}",
                     json={"policy": attack.policy}, headers=ADMIN)  # fmt: skip
    return keys


def fill_store(client: httpx.Client, key: str, count: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    base = f"/v1/collections/{STORE_COLLECTION}"
    call(client, "POST", "/v1/collections", json={"name": STORE_COLLECTION}, headers=headers)
    for start in range(0, count, 500):
        docs = [{"id": f"big-{i}", "text": store_text(i)}
                for i in range(start, min(start + 500, count))]  # fmt: skip
        call(client, "POST", f"{base}/documents", json={"documents": docs}, headers=headers)
    log(f"store attacker: {count} documents in {STORE_COLLECTION!r}")


# -- the light tenant --------------------------------------------------------------------------


@dataclass
class Light:
    """Per request kind, the latency of every request; a failed one counts as the light
    timeout (its client has no answer), so that errors cannot make a p99 look better."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    def record(self, kind: str, status: str, latency: float, timeout: float) -> None:
        if not status.startswith("2"):
            self.errors[f"{kind} {status}"] += 1
            latency = timeout
        self.latencies.setdefault(kind, []).append(latency)

    def summary(self) -> dict[str, Any]:
        every = [x for values in self.latencies.values() for x in values]
        kinds = {kind: {"p50_ms": percentile_ms(v, 50), "p99_ms": percentile_ms(v, 99),
                        "n": len(v)} for kind, v in sorted(self.latencies.items())}  # fmt: skip
        return {"p50_ms": percentile_ms(every, 50), "p99_ms": percentile_ms(every, 99),
                "n": len(every), "errors": dict(self.errors), "kinds": kinds}  # fmt: skip


EXPECT = {"embeddings": b'"embedding"', "chunks": b'"embedding"', "collection": b'"collection"'}
# One light client's cycle: mostly small embeddings requests and reads of its collection,
# and one request of 16 RAG chunks (about 9 KB: over the 8 KB that are tokenized on the
# event loop, so it goes through the tokenizer thread, as ingestion requests do).
CYCLE = ["embeddings", "embeddings", "collection"] * 6 + ["embeddings", "chunks"]


def light_requests(port: int, key: str, cycles: int) -> list[tuple[str, bytes]]:
    rng = random.Random(5)
    corpus = build_corpus(4000, seed=9)
    short = [t for t in corpus if len(t.split()) <= 16]
    long = [t for t in corpus if len(t.split()) >= 70]
    read = ("collection", encode_request(port, "GET", "/v1/collections/small", key))

    def embed(kind: str, texts: list[str]) -> tuple[str, bytes]:
        body = {"input": texts, "encoding_format": "base64"}
        return kind, encode_request(port, "POST", "/v1/embeddings", key, body)

    items = []
    for _ in range(cycles):
        for kind in CYCLE:
            if kind == "collection":
                items.append(read)
            elif kind == "chunks":
                items.append(embed(kind, rng.sample(long, 16)))
            else:
                items.append(embed(kind, rng.sample(short, rng.randint(1, 5))))
    return items


async def light_once(port: int, kind: str, data: bytes, within: float) -> tuple[str, float]:
    """One request on a new connection: its status (or failure) and latency."""
    started = time.monotonic()
    conn = await connect(port, within)
    if isinstance(conn, str):
        return conn, time.monotonic() - started
    try:
        outcome = await exchange(*conn, data, max(0.1, within - (time.monotonic() - started)))
    finally:
        await close(conn[1])
    if outcome.status == "200" and EXPECT[kind] not in outcome.body:
        return "unexpected body", time.monotonic() - started
    return outcome.status, time.monotonic() - started


async def light_client(port: int, items: Sequence[tuple[str, bytes]], offset: int,
                       args: argparse.Namespace, until: float, result: Light) -> None:  # fmt: skip
    index, start = offset, time.monotonic()
    while start < until:
        kind, data = items[index % len(items)]
        index += args.light_clients
        status, latency = await light_once(port, kind, data, args.light_timeout)
        result.record(kind, status, latency, args.light_timeout)
        start = max(start + args.light_interval, time.monotonic())  # no catching up in bursts
        await asyncio.sleep(start - time.monotonic())


async def light_phase(port: int, items: Sequence[tuple[str, bytes]], offset: int,
                      args: argparse.Namespace) -> Light:  # fmt: skip
    result, until = Light(), time.monotonic() + args.seconds
    await asyncio.gather(*(light_client(port, items, offset + i, args, until, result)
                           for i in range(args.light_clients)))  # fmt: skip
    return result


# -- the attacker's process, the server's CPU and idleness ------------------------------------


@contextlib.contextmanager
def attacker(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The attack runs while inside; the dict is filled with its outcome on leaving."""
    command = [sys.executable, str(HERE / "hostile_attacks.py"), json.dumps(spec)]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    assert proc.stdout is not None
    outcome: dict[str, Any] = {}
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the attacker process failed to start")
        yield outcome
        with contextlib.suppress(OSError):  # an attacker that died is told by its output
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        try:
            outcome |= json.loads(proc.stdout.readline())
        except ValueError:
            outcome["error"] = f"the attacker process ended without its result ({proc.poll()})"
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_idle(served: Served, probes: Sequence[tuple[str, bytes]], timeout: float) -> float:
    """Seconds until the server is idle: an attack's leftover work (a body still being
    parsed, inputs still being tokenized, store calls, queued inputs of requests whose
    clients are gone) must not count against the next phase. Idle: the light tenant's
    ``probes`` (one through each shared resource) are answered, the model queue is empty,
    and the server uses under a quarter of a core."""
    started = time.monotonic()
    deadline = started + timeout
    for kind, data in probes:  # each waits behind whatever still holds its resource
        asyncio.run(light_once(served.port, kind, data, max(1.0, deadline - time.monotonic())))
    while time.monotonic() < deadline and alive(served.pid):
        before = cpu_seconds(served.pid)
        time.sleep(0.5)
        busy = (cpu_seconds(served.pid) - before) / 0.5
        with contextlib.suppress(httpx.HTTPError, ValueError):
            health = httpx.get(f"http://127.0.0.1:{served.port}/health", headers=ADMIN,
                               timeout=5).json()  # fmt: skip
            depth = sum(m.get("queue_depth", 0) for m in health.get("models", {}).values())
            if depth == 0 and busy < 0.25:
                break
    return round(time.monotonic() - started, 1)


# -- the rounds ------------------------------------------------------------------------------


@dataclass
class Run:
    served: Served
    keys: dict[str, str]
    items: list[tuple[str, bytes]]
    args: argparse.Namespace
    phases: int = 0
    cpu: dict[str, float] = field(default_factory=lambda: {"bench": 0.0, "server": 0.0})

    @contextlib.contextmanager
    def counted(self) -> Iterator[None]:
        """Counts the CPU that this process and the server use inside."""
        bench, server_cpu = time.process_time(), cpu_seconds(self.served.pid)
        try:
            yield
        finally:
            self.cpu["bench"] += time.process_time() - bench
            self.cpu["server"] += cpu_seconds(self.served.pid) - server_cpu

    @property
    def probes(self) -> list[tuple[str, bytes]]:
        """One light request of each kind: chunks reach the tokenizer thread and the model,
        the collection read the store's threads."""
        return [next(item for item in self.items if item[0] == kind)
                for kind in ("chunks", "collection")]  # fmt: skip

    def light(self) -> dict[str, Any]:
        self.phases += 1
        offset = self.phases * 997  # other texts each phase
        with self.counted():
            result = asyncio.run(light_phase(self.served.port, self.items, offset, self.args))
        return result.summary()

    def attacked(self, name: str) -> dict[str, Any]:
        """The light phase while the attack runs, after its warm-up."""
        connections, args = ATTACKS[name].concurrency, self.args
        spec = {"attack": name, "port": self.served.port, "key": self.keys[name],
                "concurrency": getattr(args, connections) if isinstance(connections, str)
                else connections,
                "max_seconds": args.attack_warmup + args.seconds + args.light_timeout + 30,
        }  # fmt: skip
        with self.counted(), attacker(spec) as outcome:
            time.sleep(args.attack_warmup)
            self.phases += 1
            light = asyncio.run(light_phase(self.served.port, self.items, self.phases * 997,
                                            args))  # fmt: skip
        self.cpu["bench"] += float(outcome.get("cpu_s", 0.0))
        return {"light": light.summary(), "attacker": outcome}


def one_round(run: Run, attacks: Sequence[str], index: int) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for name in attacks:
        alone = run.light()
        attacked = run.attacked(name)
        drain_s = wait_idle(run.served, run.probes, run.args.drain_timeout)
        light = attacked["light"]
        entry[name] = {
            "alone": alone, "attacked": light, "attacker": attacked["attacker"],
            "ratio": ratio(alone, light), "drain_s": drain_s,
        }  # fmt: skip
        log(f"round {index + 1} {name}: alone p99 {alone['p99_ms']} ms (errors "
            f"{alone['errors']}), attacked p99 "
            f"{light['p99_ms']} ms, light errors {light['errors']}, attacker "
            f"{attacked['attacker'].get('statuses')}, drained in {drain_s} s")  # fmt: skip
        if not alive(run.served.pid):
            raise RuntimeError(f"the server exited during {name}")
    return entry


# -- the report --------------------------------------------------------------------------------


def ratio(alone: dict[str, Any], attacked: dict[str, Any]) -> float | None:
    """p99 attacked / alone (None only when a phase sent nothing at all)."""
    if not attacked["n"] or not alone["n"]:
        return None
    return round(attacked["p99_ms"] / max(alone["p99_ms"], 0.1), 2)


def kind_ratio(entry: dict[str, Any], kind: str) -> float | None:
    alone, attacked = (entry[phase]["kinds"].get(kind) for phase in ("alone", "attacked"))
    return ratio(alone, attacked) if alone and attacked else None


def median(values: Sequence[float | None]) -> float | None:
    """Of the values that are numbers; None when there are none."""
    numbers = [v for v in values if v is not None]
    return round(statistics.median(numbers), 2) if numbers else None


def attack_summary(name: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    entries = [r[name] for r in rounds if name in r]
    errors: collections.Counter[str] = collections.Counter()
    alone_errors: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[str] = collections.Counter()
    for entry in entries:
        errors.update(entry["attacked"]["errors"])
        alone_errors.update(entry["alone"]["errors"])
        statuses.update(entry["attacker"].get("statuses", {}))
    return {
        "point": ATTACKS[name].point,
        "light_alone_p99_ms": median([e["alone"]["p99_ms"] for e in entries]),
        "light_p50_ms": median([e["attacked"]["p50_ms"] for e in entries]),
        "light_p99_ms": median([e["attacked"]["p99_ms"] for e in entries]),
        "ratio": median([e["ratio"] for e in entries]),
        # The same per request kind: one kind's harm can hide behind another's slowness.
        "kind_ratios": {kind: median([kind_ratio(e, kind) for e in entries])
                        for kind in ("embeddings", "chunks", "collection")},
        "light_errors": sum(errors.values()), "light_error_kinds": dict(errors),
        "light_requests": sum(e["attacked"]["n"] for e in entries),
        # Errors alone mean an overloaded machine, not an attack: the figures are void.
        "light_alone_errors": sum(alone_errors.values()),
        "attacker_statuses": dict(statuses),
        "attacker_held_max": max(e["attacker"].get("held_max", 0) for e in entries),
        "drain_s_max": max(e["drain_s"] for e in entries),
    }  # fmt: skip


def report(run: Run, rounds: list[dict[str, Any]], failure: str | None) -> dict[str, Any]:
    names = [name for name in ATTACKS if any(name in r for r in rounds)]
    attacks = {name: attack_summary(name, rounds) for name in names}
    met = failure is None and bool(attacks) and all(
        a["ratio"] is not None and a["ratio"] <= TARGET_RATIO and a["light_errors"] == 0
        for a in attacks.values()
    )  # fmt: skip
    bench, server_cpu = run.cpu["bench"], run.cpu["server"]
    import torch

    return {
        "bench": "hostile",
        "light_alone_p99_ms": median([r[n]["alone"]["p99_ms"] for r in rounds for n in r]),
        "attacks": attacks, "target_ratio": TARGET_RATIO, "met": met,
        "worst_ratio": None if any(a["ratio"] is None for a in attacks.values())
        else max((a["ratio"] for a in attacks.values()), default=None),
        "light_errors": sum(a["light_errors"] for a in attacks.values()),
        "light_alone_errors": sum(a["light_alone_errors"] for a in attacks.values()),
        "failure": failure,
        # The load generator (light clients and attackers) against the server, in CPU time.
        "loadgen_cpu_share": round(bench / max(bench + server_cpu, 1e-9), 3),
        "settings": dict(vars(run.args)),
        "rounds": rounds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_avg": round(os.getloadavg()[0], 2)},
    }  # fmt: skip


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="per light phase")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="which, in order")
    parser.add_argument(
        "--attack-warmup",
        type=float,
        default=2.0,
        help="seconds of attack before the light tenant is measured",
    )
    parser.add_argument("--light-clients", type=int, default=3)
    parser.add_argument(
        "--light-interval",
        type=float,
        default=0.2,
        help="seconds between one light client's requests",
    )
    parser.add_argument(
        "--light-timeout",
        type=float,
        default=30.0,
        help="a light request still unanswered then is an error",
    )
    parser.add_argument(
        "--store-docs", type=int, default=2000, help="documents in the store attacker's collection"
    )
    parser.add_argument("--slow-connections", type=int, default=1100)
    parser.add_argument(
        "--server-nofile",
        type=int,
        default=1024,
        help="the server's RLIMIT_NOFILE (0: the bench's own)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        help="most seconds to wait for an idle server after an attack",
    )
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra server setting")  # fmt: skip
    args = parser.parse_args()
    unknown = set(args.attacks.split(",")) - set(ATTACKS)
    if unknown:
        parser.error(f"unknown attacks: {', '.join(sorted(unknown))}")
    return args


def main() -> None:
    args = arguments()
    attacks = args.attacks.split(",")
    rounds: list[dict[str, Any]] = []
    failure = None
    with server(args) as served:
        keys = setup(served.port, attacks, args.store_docs)
        run = Run(served, keys, light_requests(served.port, keys["light"], 100), args)
        asyncio.run(light_phase(served.port, run.items, 0, args))  # warm-up, not counted
        try:
            for index in range(args.rounds):
                rounds.append(one_round(run, attacks, index))
        except RuntimeError as error:
            failure = f"{error}; server log tail: " + served.log.read_text(
                errors="replace")[-2000:]  # fmt: skip
            log(failure)
    print(json.dumps(report(run, rounds, failure)), flush=True)


if __name__ == "__main__":
    main()
