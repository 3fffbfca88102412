"""Policy denials and limit hits join the audit log: which rule, never the request's content.

A tenant hammering a limit must not flood the log or slow its own refusals, so each
(tenant, code) is written at most once every ``AUDIT_EVERY`` seconds, with the number of
further hits since, and the write happens off the request's path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from embedgate.tenancy.audit import AuditLog

log = logging.getLogger("embedgate.audit")

AUDIT_EVERY = 10.0
TRACKED = 10_000


class DenialAudit:
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit
        self._last: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()
        self._writes: set[asyncio.Task[None]] = set()

    def note(
        self, status: int, code: str, *, tenant_id: str, key_prefix: str | None,
        client_ip: str | None, route: str,
    ) -> None:  # fmt: skip
        now = time.monotonic()
        last, count = self._last.pop((tenant_id, code), (0.0, 0))
        if now - last < AUDIT_EVERY:
            self._last[(tenant_id, code)] = (last, count + 1)
            return
        self._last[(tenant_id, code)] = (now, 0)
        while len(self._last) > TRACKED:
            self._last.popitem(last=False)
        event = "limit.exceeded" if status == 429 else "policy.denied"
        write = self._audit.record(
            event, actor=f"tenant:{tenant_id}", tenant_id=tenant_id, key_prefix=key_prefix,
            client_ip=client_ip, code=code, route=route, suppressed_since_last=count,
        )  # fmt: skip
        task = asyncio.get_running_loop().create_task(self._write(write))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, write: object) -> None:
        try:
            await write  # type: ignore[misc]
        except Exception:
            log.warning("could not audit a denial", exc_info=True)

    async def drain(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
