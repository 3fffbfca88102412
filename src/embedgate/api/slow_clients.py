"""The HTTP protocol with a bound on connections and deadlines for slow clients.

uvicorn times out only an idle kept-alive connection: a client that sends half a request
head, or a body one byte a minute, holds its connection (and a file descriptor) forever.
Here a request's head must be complete within ``head_timeout`` of the connection opening
(or of the previous response), and its body may go ``body_timeout`` without a byte and take
``body_deadline`` in all; then the client gets 408 and the app a disconnect. Connections
past the ``Gate``'s bound take the place of the one that has waited longest for a head, or
get 503 ``too_many_connections`` at once, before any byte is read.
"""

from __future__ import annotations

import asyncio
import time
from asyncio import TimerHandle
from typing import ClassVar

from embedgate.api.connections import Gate
from embedgate.api.protocol import HeadLimitProtocol
from embedgate.errors import EmbedgateError

MOST_LINGERING = 32  # refused connections that may linger at once (inside connections'
# FILE_RESERVE); past it, a refusal closes once written
REFUSED_MESSAGES = {
    "server": "The server holds as many connections as it allows; retry shortly.",
    "client": "Your address holds as many connections as this server allows; close one.",
}


def request_timeout(what: str, seconds: float) -> EmbedgateError:
    return EmbedgateError(
        408, f"The request {what} did not arrive within {seconds:g} s; the connection is closed.",
        code="request_timeout",
    )  # fmt: skip


class GuardedProtocol(HeadLimitProtocol):
    gate: ClassVar[Gate] = Gate()  # replaced by ``configured``
    _admitted = False
    _lingering = False
    _responses = 0
    _head_timer: TimerHandle | None = None
    _body_timer: TimerHandle | None = None
    _body_open = False  # a request's head is in, its body not yet all
    _body_began = 0.0
    _body_last = 0.0

    @classmethod
    def configured(cls, gate: Gate) -> type[GuardedProtocol]:
        """This protocol bound to one server's gate (uvicorn instantiates the class)."""
        return type("GuardedProtocol", (cls,), {"gate": gate})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        refused = self.gate.admit(self._address())
        if refused is not None:
            self._refuse_connection(refused)
            return
        self._admitted = True
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._release()
        if self._lingering:
            self._lingering = False
            self.gate.refusing -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._body_open and self._body_timer is None and not self._refused:
            self._body_timer = self.loop.call_later(self.gate.body_timeout, self._check_body)

    def on_headers_complete(self) -> None:
        self._cancel_head()
        self._body_open = True
        self._body_began = self._body_last = self.loop.time()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_last = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_open = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()
        self._await_next_head()

    def on_response_complete(self) -> None:
        self._responses += 1
        super().on_response_complete()
        self._await_next_head()

    def evict(self) -> None:
        """Closed for a new connection at the bound (``Gate``): released at once, so the
        newcomer has its place; a half-sent head gets its 408 first, without lingering."""
        self._cancel_head()
        self._release()
        if self._refused or (self._responses and self._head_bytes == 0):
            self.transport.close()  # answered already, or idle: nothing to say
        else:
            self._answer(request_timeout("line and headers", self.gate.head_timeout),
                         linger=False)  # fmt: skip

    def _release(self) -> None:
        self.gate.got_head(self)
        if self._admitted:
            self._admitted = False
            self.gate.release(self._address())

    def _address(self) -> str | None:
        return self.client[0] if self.client else None

    def _refuse_connection(self, refused: str) -> None:
        self.gate.note(f"refused-{refused}", f"connection refused: over the {refused} bound")
        error = EmbedgateError(503, REFUSED_MESSAGES[refused], code="too_many_connections",
                               headers={"Retry-After": "1"})  # fmt: skip
        linger = self.gate.refusing < MOST_LINGERING
        if linger:
            self._lingering = True
            self.gate.refusing += 1
        self._answer(error, linger=linger)

    def _await_next_head(self) -> None:
        """Once the last request is read and answered, the next head's clock starts."""
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self._body_open and not self.pipeline and not self._refused:
            self._arm_head()

    def _arm_head(self) -> None:
        self._cancel_head()
        if not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.gate.head_timeout, self._head_expired)
            self.gate.waits_for_head(self, time.monotonic())

    def _cancel_head(self) -> None:
        self.gate.got_head(self)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        self.gate.got_head(self)
        if self._refused or self.transport.is_closing():
            return
        if self._responses and self._head_bytes == 0:
            self.transport.close()  # an idle kept-alive connection: nothing to answer
            return
        self.gate.note("head", "request head not complete in time: answered 408")
        self._answer(request_timeout("line and headers", self.gate.head_timeout))

    def _check_body(self) -> None:
        self._body_timer = None
        if not self._body_open or self._refused or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused or self.cycle.body:  # waiting for the app, not the client
            self._body_last = now
        idle_end = self._body_last + self.gate.body_timeout
        deadline = self._body_began + self.gate.body_deadline
        if now < min(idle_end, deadline):
            self._body_timer = self.loop.call_later(min(idle_end, deadline) - now,
                                                    self._check_body)  # fmt: skip
            return
        self._body_expired(self.gate.body_timeout if now < deadline else self.gate.body_deadline)

    def _body_expired(self, seconds: float) -> None:
        """The app reads a disconnect; the client gets 408 unless an answer has begun."""
        cycle = self.cycle
        cycle.disconnected = True
        cycle.message_event.set()
        if cycle.response_started:
            self.transport.close()
            return
        self.gate.note("body", "request body not received in time: answered 408")
        self._answer(request_timeout("body", seconds))
