"""The audit log: admin actions and security events, never request content or secrets."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from embedgate.storage.base import AuditStore
from embedgate.storage.records import AuditEvent


class AuditLog:
    def __init__(self, store: AuditStore, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    async def record(
        self,
        event: str,
        *,
        actor: str,
        tenant_id: str | None = None,
        key_prefix: str | None = None,
        client_ip: str | None = None,
        **detail: Any,
    ) -> None:
        await self._store.append(
            AuditEvent(event, actor, self._clock(), tenant_id, key_prefix, client_ip, detail)
        )
