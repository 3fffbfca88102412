"""HTTP/1.1 exchanges for the hostile-tenants bench that never raise: a server answering
413/429/503/408, or closing the connection in the middle of a body, is an expected outcome
to count, not a failure of the bench."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from loadgen import TRANSPORT_ERRORS

CHUNK = 1 << 20  # large bodies go out a MiB at a time: no 55 MiB copy in the transport buffer
MAX_UNFRAMED = 1 << 20  # a response without Content-Length is read until EOF, up to this


@dataclass
class Outcome:
    """``status`` is the HTTP status ("200", "429") or what went wrong instead ("closed",
    "TimeoutError", "ConnectionResetError"); ``reusable`` when the connection can go on."""

    status: str
    reusable: bool = False
    body: bytes = b""


async def read_any(reader: asyncio.StreamReader) -> Outcome:
    """One response, framed by Content-Length or by the end of the connection."""
    line = await reader.readuntil(b"\r\n")
    status = line.split(None, 2)[1].decode("latin-1")
    length, close = None, False
    while (header := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = header.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if length is None:
        return Outcome(status, False, await reader.read(MAX_UNFRAMED))
    return Outcome(status, not close, await reader.readexactly(length))


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        writer.write(view[start : start + CHUNK])
        await writer.drain()


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, within: float
) -> Outcome:
    """Send ``data`` while already reading the answer: a server may refuse a large body
    before it has read it, answer, and close."""
    sender = asyncio.create_task(_send(writer, data))
    try:
        async with asyncio.timeout(within):
            return await read_any(reader)
    except asyncio.IncompleteReadError:
        return Outcome("closed")
    except IndexError:  # not an HTTP status line
        return Outcome("bad_response")
    except TRANSPORT_ERRORS as error:
        return Outcome(type(error).__name__)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, *TRANSPORT_ERRORS):
            await sender


async def connect(
    port: int, within: float, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str:
    """A loopback connection from ``source`` (another loopback address stands for another
    client machine), or the name of what failed."""
    try:
        async with asyncio.timeout(within):
            return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except TRANSPORT_ERRORS as error:
        return type(error).__name__


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(*TRANSPORT_ERRORS):
        async with asyncio.timeout(2):
            await writer.wait_closed()
