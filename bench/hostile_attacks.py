"""The attacker of bench/hostile.py: one attack of issue 13, in its own process.

    python bench/hostile_attacks.py '{"attack": "body_flood", "port": 8000, "key": "...",
                                      "max_seconds": 60, "concurrency": 2}'

Runs in a process of its own so that its work (connections, large bodies) never delays the
light tenant's client, which is being measured in the bench's process. Prints "ready" once
the attack is on, stops at a line on stdin (or its end, or after ``max_seconds``), then
prints one JSON line: the attacker's outcomes by status and its own CPU seconds.

Every attack is bounded: a fixed number of connections, each one request at a time, and a
pause of REFUSED_PAUSE_S after every refusal (an attacker that retries once a second, not
a packet flood: that is for the network in front of a server, not for tenant isolation).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import resource
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_wire import close, connect, exchange
from loadgen import encode_request

REFUSED_PAUSE_S = 1.0
REQUEST_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
STORE_COLLECTION = "big"
UPSERT_IDS = 20  # the metadata-only upserts rewrite these documents, so disk use stays bounded
SLOW_SOURCE = "127.0.0.2"  # another loopback address: another client machine, to the server


def store_text(index: int) -> str:
    """Document ``index`` of the attacker's collection: every one matches the keyword
    query, so each search ranks the whole collection and returns top_k of it."""
    return f"alpha document {index} about caches queues and tenants, part {index % 97}"


@dataclass
class Stats:
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    held: int = 0  # slow connections open now
    held_max: int = 0
    ramped: asyncio.Event = field(default_factory=asyncio.Event)  # all of them were open
    ramp_to: int = 0

    def hold(self, delta: int) -> None:
        self.held += delta
        self.held_max = max(self.held_max, self.held)
        if self.held_max >= self.ramp_to:
            self.ramped.set()


async def pause(stop: asyncio.Event, seconds: float = REFUSED_PAUSE_S) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def hammer(port: int, requests: Sequence[bytes], stats: Stats, stop: asyncio.Event) -> None:
    """One attacker connection: ``requests`` in turn, each as soon as the last is answered,
    a new connection whenever the server closed one, a pause after each refusal."""
    index, conn = 0, None
    try:
        while not stop.is_set():
            if conn is None:
                conn = await connect(port, CONNECT_TIMEOUT_S)
                if isinstance(conn, str):
                    stats.statuses[conn] += 1
                    conn = None
                    await pause(stop)
                    continue
            try:
                outcome = await exchange(*conn, requests[index % len(requests)],
                                         REQUEST_TIMEOUT_S)  # fmt: skip
            except asyncio.CancelledError:  # the attack ended before the server answered
                stats.statuses["unanswered"] += 1
                raise
            index += 1
            stats.statuses[outcome.status] += 1
            if not outcome.reusable:
                await close(conn[1])
                conn = None
            if not outcome.status.startswith("2"):
                await pause(stop)
    finally:
        if conn is not None:
            await close(conn[1])


def embeddings(port: int, key: str, body: bytes) -> bytes:
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# -- the attacks: each returns its connections' coroutines ----------------------------------

Workers = list[Awaitable[None]]


def body_flood(spec: dict[str, Any], stats: Stats, stop: asyncio.Event) -> Workers:
    """Point 2a: 55 MiB of token ids, [[1] * 14000] * 2048, from a tenant with no
    admission left (rpm 0, quota 0): refused, but only after the body is read and parsed."""
    row = "[" + ",".join(["1"] * 14000) + "]"
    data = embeddings(spec["port"], spec["key"], ('{"input":[' + ",".join([row] * 2048) + "]}")
                      .encode())  # fmt: skip
    return [hammer(spec["port"], [data], stats, stop) for _ in range(spec["concurrency"])]


def token_flood(spec: dict[str, Any], stats: Stats, stop: asyncio.Event) -> Workers:
    """Point 2b: 2048 inputs of "word " * 6000 (60 MiB), which all go through the
    tokenizer before the request is refused as too long."""
    body = json.dumps({"input": ["word " * 6000] * 2048}).encode()
    data = embeddings(spec["port"], spec["key"], body)
    return [hammer(spec["port"], [data], stats, stop) for _ in range(spec["concurrency"])]


def store_flood(spec: dict[str, Any], stats: Stats, stop: asyncio.Event) -> Workers:
    """Point 3: keyword searches with top_k 1000 and listings of 1000 documents on the
    attacker's own collection, and metadata-only upserts of 1 MB, from many connections
    at once, by a tenant with rpm 2 and max_concurrency 1."""
    port, key, base = spec["port"], spec["key"], f"/v1/collections/{STORE_COLLECTION}"
    search = encode_request(port, "POST", f"{base}/search", key,
                            {"query": "alpha", "mode": "keyword", "top_k": 1000})  # fmt: skip
    listing = encode_request(port, "GET", f"{base}/documents?limit=1000", key)
    workers: Workers = []
    for index in range(spec["concurrency"]):
        doc = index % UPSERT_IDS  # the same text: nothing to embed, the metadata is rewritten
        upsert = encode_request(port, "POST", f"{base}/documents", key, {"documents": [
            {"id": f"big-{doc}", "text": store_text(doc), "metadata": {"blob": "x" * 10**6}},
        ]})  # fmt: skip
        mix = [search, listing] * 4 + [search, upsert]
        workers.append(hammer(port, mix[index % len(mix) :] + mix[: index % len(mix)], stats,
                              stop))  # fmt: skip
    return workers


def queue_flood(spec: dict[str, Any], stats: Stats, stop: asyncio.Event) -> Workers:
    """Point 4: valid requests of 2048 short inputs from many connections at once, more
    than the model's queue holds, and requests of one batch (64 inputs) from as many
    connections again: each fills the room a finished batch leaves before a 2048-input
    request would fit, so the queue stays full, as a determined tenant keeps it."""
    workers: Workers = []
    for index in range(spec["concurrency"] * 9):
        size = 2048 if index < spec["concurrency"] else 64
        texts = [f"flood {index} text {i} about queues" for i in range(size)]
        data = embeddings(spec["port"], spec["key"], json.dumps({"input": texts}).encode())
        workers.append(hammer(spec["port"], [data], stats, stop))
    return workers


def slow_heads(spec: dict[str, Any], stats: Stats, stop: asyncio.Event) -> Workers:
    """Point 5: connections from another address that send half a request head and hold
    it; one the server closes is opened again after a pause."""
    head = (f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{spec['port']}\r\n"
            f"Authorization: Bearer {spec['key']}\r\nContent-Ty").encode()  # fmt: skip
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = spec["concurrency"] + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    gate = asyncio.Semaphore(64)  # connect in waves, as the server accepts them
    return [hold(spec["port"], head, stats, stop, gate) for _ in range(spec["concurrency"])]


async def hold(port: int, head: bytes, stats: Stats, stop: asyncio.Event,
               gate: asyncio.Semaphore) -> None:  # fmt: skip
    while not stop.is_set():
        async with gate:
            conn = await connect(port, CONNECT_TIMEOUT_S, SLOW_SOURCE)
        if isinstance(conn, str):
            stats.statuses[conn] += 1
            await pause(stop)
            continue
        reader, writer = conn
        stats.hold(1)
        try:
            writer.write(head)
            stats.statuses[await wait_answer(reader, stop)] += 1
        finally:
            stats.hold(-1)
            await close(writer)
        await pause(stop)


async def wait_answer(reader: asyncio.StreamReader, stop: asyncio.Event) -> str:
    """What the server did with a half head: nothing until the end ("held"), an answer
    ("408", "400") or closing it ("closed")."""
    read = asyncio.ensure_future(reader.read(65536))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not read.done():
        read.cancel()
        return "held"
    if read.exception() is not None:
        return type(read.exception()).__name__
    data = read.result()
    if data.startswith(b"HTTP/1.1 "):
        return data.split(None, 2)[1].decode("latin-1")
    return "closed" if not data else "bad_response"


ATTACKS: dict[str, Callable[[dict[str, Any], Stats, asyncio.Event], Workers]] = {
    "body_flood": body_flood, "token_flood": token_flood, "store_flood": store_flood,
    "queue_flood": queue_flood, "slow_heads": slow_heads,
}  # fmt: skip


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    stats, stop = Stats(), asyncio.Event()
    loop = asyncio.get_running_loop()
    # The parent's line on stdin (or its end) stops the attack.
    threading.Thread(target=lambda: (sys.stdin.readline(), loop.call_soon_threadsafe(stop.set)),
                     daemon=True).start()  # fmt: skip
    tasks = [asyncio.ensure_future(w) for w in ATTACKS[spec["attack"]](spec, stats, stop)]
    if spec["attack"] == "slow_heads":  # on only once its connections are open
        stats.ramp_to = spec["concurrency"]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(20):
                await stats.ramped.wait()
    print("ready", flush=True)
    started = time.monotonic()
    await pause(stop, spec["max_seconds"])
    stop.set()
    _, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:  # an exchange still waiting for its answer: dropped, as a client would
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            stats.statuses[f"bench error {type(outcome).__name__}"] += 1
    return {"statuses": dict(stats.statuses), "held_max": stats.held_max,
            "seconds": round(time.monotonic() - started, 1),
            "cpu_s": round(time.process_time(), 2)}  # fmt: skip


def main() -> None:
    spec = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(run(spec))), flush=True)


if __name__ == "__main__":
    main()
