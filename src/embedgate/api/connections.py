"""How many client connections the server holds, and how long a client may take to talk.

Every connection holds a file descriptor: without a bound, a few hundred clients that
open connections and never finish a request take every descriptor, and then the server
can accept nobody, and open no database or index file either. So connections past
``max_connections`` (derived from the open-file limit, keeping a reserve for files) are
answered 503 at once and closed, and slow request heads and bodies are timed out
(``api.slow_clients``). At the bound, a new connection first takes the place of the one
that has waited longest for a request head (a half-sent head, or an idle kept-alive
connection), as nginx drops idle connections when it runs out: a crowd of slow clients then
cannot keep anyone else out even until their deadline.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, field
from typing import Protocol

from embedgate.config.settings import Settings

log = logging.getLogger("embedgate.connections")

# Descriptors kept for everything but client connections: the state database and its
# pool, model files, Redis and PostgreSQL sockets, answers lingering after a refusal...
FILE_RESERVE = 128
FILES_PER_OPEN_TENANT = 4  # an embedded-store tenant database: db, -wal, -shm, an index
MOST_CONNECTIONS = 8192  # the default's ceiling, however high the open-file limit
NOFILE_WANTED = 1 << 20  # when the hard limit is "unlimited"
NOTE_EVERY_S = 10.0
# A connection waiting this long for its request head may be closed to make room: a real
# client sends its head as it connects, so only slow or idle ones are this old.
EVICT_AFTER_S = 1.0


class Evictable(Protocol):
    def evict(self) -> None:
        """Close this connection (it waits for a request head) to make room for another."""


def raise_open_file_limit() -> int:
    """The soft RLIMIT_NOFILE raised to the hard one (where lower); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_WANTED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # e.g. above the kernel's nr_open: keep the old one
            log.warning("could not raise the open-file limit from %d to %d", soft, target)
    return NOFILE_WANTED if soft == resource.RLIM_INFINITY else soft


def connection_bound(settings: Settings, nofile: int) -> int:
    """``max_connections``, or the open-file limit less the reserve (at least a quarter of
    it, at most ``MOST_CONNECTIONS``)."""
    if settings.max_connections is not None:
        return settings.max_connections
    reserve = FILE_RESERVE + FILES_PER_OPEN_TENANT * settings.search_open_tenants
    return max(1, min(MOST_CONNECTIONS, max(nofile // 4, nofile - reserve)))


@dataclass
class Gate:
    """The limits of one server, and the connections it holds now (event loop only)."""

    max_connections: int = MOST_CONNECTIONS
    per_client: int = 0  # 0: no per-address bound
    head_timeout: float = 20.0
    body_timeout: float = 30.0
    body_deadline: float = 300.0
    open: int = 0
    by_client: dict[str, int] = field(default_factory=dict)
    refusing: int = 0  # refused connections still lingering after their answer
    # connections waiting for a request head, oldest first, with when they began to wait
    waiting: dict[Evictable, float] = field(default_factory=dict)
    _noted: dict[str, tuple[float, int]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Gate:
        nofile = raise_open_file_limit()
        bound = connection_bound(settings, nofile)
        log.info("at most %d client connections (open-file limit %d)", bound, nofile)
        if bound > nofile - FILE_RESERVE:
            log.warning("max_connections %d leaves few of the %d open files for the "
                        "server's own files", bound, nofile)  # fmt: skip
        return cls(bound, settings.max_connections_per_client, settings.client_header_timeout,
                   settings.client_body_timeout, settings.client_body_deadline)  # fmt: skip

    def admit(self, client: str | None) -> str | None:
        """Count a new connection in, or say why it is refused."""
        if self.open >= self.max_connections and not self._evict_one():
            return "server"
        address = client or "unknown"
        if self.per_client and self.by_client.get(address, 0) >= self.per_client:
            return "client"
        self.open += 1
        if self.per_client:
            self.by_client[address] = self.by_client.get(address, 0) + 1
        return None

    def waits_for_head(self, connection: Evictable, since: float) -> None:
        self.waiting.pop(connection, None)  # to the end: the newest waiter
        self.waiting[connection] = since

    def got_head(self, connection: Evictable) -> None:
        self.waiting.pop(connection, None)

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for a head, if it has waited
        ``EVICT_AFTER_S``; whether one was (it is released at once)."""
        oldest = next(iter(self.waiting.items()), None)
        if oldest is None or time.monotonic() - oldest[1] < EVICT_AFTER_S:
            return False
        del self.waiting[oldest[0]]
        oldest[0].evict()
        self.note("evicted", "at the connection bound: closed the longest wait for a head")
        return True

    def release(self, client: str | None) -> None:
        self.open -= 1
        address = client or "unknown"
        if self.per_client:
            left = self.by_client.get(address, 1) - 1
            if left > 0:
                self.by_client[address] = left
            else:
                self.by_client.pop(address, None)

    def note(self, event: str, message: str) -> None:
        """A warning at most every ``NOTE_EVERY_S`` per kind, with how many were not logged:
        a flood of slow clients must not flood the log."""
        now = time.monotonic()
        last, count = self._noted.get(event, (0.0, 0))
        if now - last < NOTE_EVERY_S:
            self._noted[event] = (last, count + 1)
            return
        self._noted[event] = (now, 0)
        more = f" ({count} more since the last note)" if count else ""
        log.warning("%s%s", message, more)
