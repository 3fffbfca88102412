"""The HTTP client of the upstream backends: one aiohttp session, keep-alive, JSON bytes in
and out.

aiohttp rather than httpx on this path because it is the gateway's hottest code: against a
stand-in that answers at once, an httpx ``AsyncClient.post`` costs 1.2 ms of CPU alone and
2.8 ms at 64 concurrent requests (its connection pool scans every connection per request),
aiohttp 0.2-0.3 ms (docs/benchmarks.md, "The gateway's own cost"). Transport failures come
out as three exceptions the failover logic understands; the status and body are the
caller's to judge. Proxy variables (``HTTP_PROXY`` and the like) are not read: the engines
sit on the internal network, and aiohttp would look them up in a thread on every request.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp


class Unreachable(Exception):
    """Connection refused or timed out: nothing was sent, another URL may answer."""


class ConnectionLost(Exception):
    """Reset or closed mid-request: safe to resend elsewhere."""


class ReadTimeout(Exception):
    """No answer within the timeout."""


class UpstreamHttp:
    def __init__(self, headers: Mapping[str, str], *, timeout: float, connect_timeout: float):
        self._headers = {**headers, "Content-Type": "application/json"}
        # sock_read, like httpx's read timeout: the most seconds between two reads.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=timeout
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=256, limit_per_host=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, headers=self._headers, timeout=self._timeout,
            trust_env=False, auto_decompress=True,
        )  # fmt: skip

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        """The status and body of one POST; ``Unreachable``, ``ConnectionLost`` or
        ``ReadTimeout`` where no answer came."""
        assert self._session is not None, "client not started"
        try:
            async with self._session.post(url, data=body) as response:
                return response.status, await response.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise Unreachable(type(exc).__name__) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise ReadTimeout(type(exc).__name__) from exc
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(type(exc).__name__) from exc
        except aiohttp.ClientError as exc:  # reset, closed, or not HTTP: nothing answered
            raise ConnectionLost(type(exc).__name__) from exc
