"""Admin operations on keys, audited: one implementation for the HTTP API and the CLI."""

from __future__ import annotations

from collections.abc import Sequence

from embedgate.errors import EmbedgateError
from embedgate.storage.records import ApiKey
from embedgate.tenancy.audit import AuditLog
from embedgate.tenancy.keys import SCOPES, IssuedKey, KeyService, Scope
from embedgate.tenancy.tenants import TenantService


def key_not_found() -> EmbedgateError:
    return EmbedgateError(404, "No such key.", code="not_found")


class KeyAdmin:
    def __init__(self, tenants: TenantService, keys: KeyService, audit: AuditLog) -> None:
        self._tenants = tenants
        self._keys = keys
        self._audit = audit

    async def create(
        self, tenant_id: str, *, actor: str, client_ip: str | None = None, name: str = "",
        scopes: Sequence[Scope] = SCOPES, expires_in: int | None = None,
    ) -> IssuedKey:  # fmt: skip
        await self._tenants.get(tenant_id)  # 404 for an unknown tenant
        issued = await self._keys.issue(tenant_id, name=name, scopes=scopes, expires_in=expires_in)
        await self._audit.record(
            "key.created", actor=actor, tenant_id=tenant_id, key_prefix=issued.record.prefix,
            client_ip=client_ip, key_id=issued.record.id,
        )  # fmt: skip
        return issued

    async def listed(self, tenant_id: str) -> list[ApiKey]:
        await self._tenants.get(tenant_id)
        return await self._keys.listed(tenant_id)

    async def revoke(
        self, tenant_id: str, key_id: str, *, actor: str, client_ip: str | None = None
    ) -> None:
        revoked = await self._keys.revoke(tenant_id, key_id)
        if revoked is None:
            raise key_not_found()
        await self._audit.record(
            "key.revoked", actor=actor, tenant_id=tenant_id, key_prefix=revoked.prefix,
            client_ip=client_ip, key_id=key_id,
        )  # fmt: skip

    async def rotate(
        self, tenant_id: str, key_id: str, *, actor: str, client_ip: str | None = None,
        grace_period: int = 0,
    ) -> IssuedKey:  # fmt: skip
        issued = await self._keys.rotate(tenant_id, key_id, grace_period)
        if issued is None:
            raise key_not_found()
        await self._audit.record(
            "key.rotated", actor=actor, tenant_id=tenant_id, key_prefix=issued.record.prefix,
            client_ip=client_ip, old_key_id=key_id, key_id=issued.record.id,
            grace_period=grace_period,
        )  # fmt: skip
        return issued
