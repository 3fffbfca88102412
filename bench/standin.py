"""A fast OpenAI-compatible embeddings stand-in: answers ``POST /v1/embeddings`` at once.

For measuring what the gateway itself costs (bench/upstream.py): it does no model work,
parses no more of a request than it must (the number of inputs), and sends replies built
from one pre-encoded base64 vector, so that its own CPU time stays small beside the
gateway's. HTTP/1.1 keep-alive, Content-Length framing only; loopback use only.

    python bench/standin.py --port 9100 --dimensions 384
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json

import numpy as np


class Replies:
    """The response bytes for ``n`` inputs, built once per ``n``."""

    def __init__(self, dimensions: int) -> None:
        vector = (np.ones(dimensions) / np.sqrt(dimensions)).astype("<f4")
        self._vector = base64.b64encode(vector.tobytes()).decode()
        self._cache: dict[int, bytes] = {}

    def for_inputs(self, n: int) -> bytes:
        if n not in self._cache:
            rows = ",".join(
                f'{{"object":"embedding","index":{i},"embedding":"{self._vector}"}}'
                for i in range(n)
            )
            body = (f'{{"object":"list","data":[{rows}],"model":"standin",'
                    f'"usage":{{"prompt_tokens":{n},"total_tokens":{n}}}}}').encode()  # fmt: skip
            head = (f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n\r\n").encode()  # fmt: skip
            self._cache[n] = head + body
        return self._cache[n]


def count_inputs(body: bytes) -> int:
    value = json.loads(body).get("input")
    return len(value) if isinstance(value, list) and value and not isinstance(value[0], int) else 1


class StandIn(asyncio.Protocol):
    def __init__(self, replies: Replies) -> None:
        self._replies = replies
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self._buffer) < end + 4 + length:
                return
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            assert self._transport is not None
            self._transport.write(self._replies.for_inputs(count_inputs(body)))


async def serve(port: int, dimensions: int) -> None:
    replies = Replies(dimensions)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: StandIn(replies), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dimensions", type=int, default=384)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.dimensions))


if __name__ == "__main__":
    main()
