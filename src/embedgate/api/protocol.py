"""uvicorn's httptools protocol, with a limit on the size of a request's head.

httptools buffers one header of any length (joining its pieces with ``bytes +=``, so the
CPU cost grows with the square of its length, on the event loop) and uvicorn keeps any
number of headers: without a limit, one client could stall every request or fill memory.
A head (request line and headers) over ``MAX_HEAD_BYTES`` is answered 431 in the OpenAI
envelope and the connection closed, before the app sees it.
"""

from __future__ import annotations

import logging

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from embedgate.errors import EmbedgateError

MAX_HEAD_BYTES = 64 * 1024
LINGER_SECONDS = 2.0
log = logging.getLogger("embedgate.errors")


class HeadLimitProtocol(HttpToolsProtocol):
    """Counts the bytes of each request's head as they arrive, up to its blank line."""

    _in_head = True
    _head_bytes = 0
    _tail = b""  # the last bytes seen, in case the blank line is split between reads
    _refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the rest of the request, while the connection lingers
        if self._in_head:
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
            self._tail = seen[-3:]
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._tail = False, 0, b""
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # a kept-alive connection's next request starts with its head

    def _refuse(self) -> None:
        log.warning("request head over %d bytes: answered 431", MAX_HEAD_BYTES)
        message = (
            f"The request line and headers are larger than this server accepts "
            f"({MAX_HEAD_BYTES} bytes)."
        )
        self._answer(EmbedgateError(431, message, code="request_header_too_large"))

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools cannot parse, in the envelope."""
        message = "The HTTP request is malformed; it could not be parsed."
        self._answer(EmbedgateError(400, message, code="invalid_http_request"))

    def _answer(self, error: EmbedgateError, *, linger: bool = True) -> None:
        """The error, then close: the rest of the connection's bytes cannot be trusted.

        Closing at once with unread bytes would make the kernel reset the connection, and
        the client could lose the answer; so the answer is followed by a FIN and whatever
        the client still sends is read and dropped for up to ``LINGER_SECONDS`` (unless
        ``linger`` is false: then the socket closes once the answer is written)."""
        body = orjson.dumps(error.body())
        head = [STATUS_LINE[error.status]]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [f"{name}: {value}\r\n".encode("latin-1") for name, value in error.headers.items()]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self._refused = True
        if not linger:
            self.transport.close()
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
