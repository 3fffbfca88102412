"""Who is calling: a tenant key resolves to its tenant, or the request is refused.

Behind an authenticating gateway (trusted-proxy mode), a request that comes from one of the
gateway's networks with the gateway's shared secret may name its tenant in X-Tenant-ID
instead; anywhere else that header is never read.

Failures are audited with the presented key's display prefix and the client's address,
at most once per address every ``AUDIT_EVERY`` seconds (with a count), so that a flood of
bad keys cannot flood the audit log.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address

from embedgate.errors import EmbedgateError
from embedgate.storage.base import TenantStore
from embedgate.storage.records import ApiKey, Tenant
from embedgate.tenancy.audit import AuditLog
from embedgate.tenancy.keys import KEY_PATTERN, SCOPES, KeyService, Scope
from embedgate.tenancy.policy import Policy, effective_policy
from embedgate.tenancy.single_flight import SingleFlight
from embedgate.tenancy.throttle import FailureThrottle

INVALID_KEY = "Invalid API key"
TENANT_CACHE_SECONDS = 2.0
AUDIT_EVERY = 10.0
TRACKED_ADDRESSES = 10_000


def invalid_api_key() -> EmbedgateError:
    return EmbedgateError(401, INVALID_KEY, code="invalid_api_key", type="invalid_request_error")


def presented_prefix(token: str | None) -> str | None:
    """What an audit entry may show of a presented key: the display prefix of a
    well-formed one, nothing of anything else (it might be some other secret)."""
    match = KEY_PATTERN.fullmatch(token or "")
    return f"tenant_{match.group(1)}_{match.group(2)[:4]}" if match else None


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: Tenant
    key: ApiKey
    policy: Policy  # the plan's defaults with the tenant's overrides

    def require(self, scope: Scope) -> None:
        if scope not in self.key.scopes:
            raise EmbedgateError(
                403, f"This API key lacks the `{scope}` scope.", code="permission_denied"
            )


class CallerDenied(EmbedgateError):
    """A known tenant refused by its own status or policy: the refusal is metered and
    audited like any other of its requests."""

    def __init__(self, caller: Caller, status: int, message: str, *, code: str) -> None:
        super().__init__(status, message, code=code)
        self.caller = caller


@dataclass(frozen=True, slots=True)
class TrustedProxy:
    secret: str
    networks: Sequence[IPv4Network | IPv6Network]

    def admits(self, presented: str, client_ip: str | None) -> bool:
        inside = _inside(client_ip, self.networks)
        return inside and hmac.compare_digest(presented.encode(), self.secret.encode())


def _inside(client_ip: str | None, networks: Sequence[IPv4Network | IPv6Network]) -> bool:
    try:
        address = ip_address(client_ip or "")
    except ValueError:
        return False
    return any(address in network for network in networks)


class Authenticator:
    def __init__(
        self, keys: KeyService, store: TenantStore, audit: AuditLog,
        plans: Mapping[str, Policy], proxy: TrustedProxy | None = None,
        throttle: FailureThrottle | None = None,
    ) -> None:  # fmt: skip
        self._keys = keys
        self._store = store
        self._audit = audit
        self._plans = plans
        self._proxy = proxy
        # tenant id -> (expiry, the tenant and its effective policy, or None if unknown)
        self._tenants: dict[str, tuple[float, tuple[Tenant, Policy] | None]] = {}
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._loading: SingleFlight[str, tuple[Tenant, Policy] | None] = SingleFlight()
        self.throttle = throttle or FailureThrottle(0)  # checked by the callers, before a key

    async def from_proxy(
        self, presented_secret: str, tenant_id: str | None, client_ip: str | None
    ) -> Caller:
        """A gateway's request: its secret and network vouch for the X-Tenant-ID it sends.
        Nothing is looked up before the gateway is admitted."""
        if self._proxy is None or not self._proxy.admits(presented_secret, client_ip):
            await self.failed(None, client_ip)
            raise invalid_api_key()
        member = await self._tenant(tenant_id) if tenant_id else None
        if member is None:
            raise invalid_api_key()
        tenant = member[0]
        proxy_key = ApiKey(id="proxy", tenant_id=tenant.id, name="trusted proxy",
                           prefix="proxy", scopes=SCOPES, created_at=tenant.created_at,
                           tenant_uid=tenant.uid)  # fmt: skip
        return self._admit(member, proxy_key, client_ip)

    async def authenticate(self, token: str | None, client_ip: str | None) -> Caller:
        key = await self._keys.verify(token) if token else None
        member = await self._tenant(key.tenant_id) if key is not None else None
        if member is not None and key is not None and key.tenant_uid != member[0].uid:
            # A new tenant's key where this replica still caches the deleted one of that
            # id, or the other way round: the store decides.
            member = await self._tenant(key.tenant_id, fresh=True)
            if member is not None and key.tenant_uid != member[0].uid:
                member = None  # a key of a deleted tenant, whose id was given to a new one
        if key is None or member is None:
            await self.failed(token, client_ip)
            raise invalid_api_key()
        return self._admit(member, key, client_ip)

    async def from_session(self, tenant_id: str, key_id: str, client_ip: str | None) -> Caller:
        """A console session's tenant, as its key: both re-read from the store (no cache),
        so a revoked or expired key or a suspended tenant ends the session at once."""
        key = await self._keys.live(tenant_id, key_id)
        tenant = await self._store.get(tenant_id) if key is not None else None
        if key is None or tenant is None or key.tenant_uid != tenant.uid:
            raise invalid_api_key()
        return self._admit((tenant, effective_policy(self._plans, tenant)), key, client_ip)

    def _admit(self, member: tuple[Tenant, Policy], key: ApiKey, client_ip: str | None) -> Caller:
        tenant, policy = member
        caller = Caller(tenant, key, policy)
        if tenant.status != "active":
            raise CallerDenied(caller, 403, "This tenant is suspended.", code="permission_denied")
        if policy.ip_allowlist is not None and not _inside(client_ip, policy.ip_allowlist):
            raise CallerDenied(
                caller, 403, "Your organization does not allow requests from this address.",
                code="ip_not_allowed",
            )  # fmt: skip
        return caller

    async def failed(self, token: str | None, client_ip: str | None) -> None:
        self.throttle.failed(client_ip)
        address = client_ip or "unknown"
        now = time.monotonic()
        last, count = self._failures.pop(address, (0.0, 0))
        if now - last < AUDIT_EVERY:
            self._failures[address] = (last, count + 1)
            return
        self._failures[address] = (now, 0)
        while len(self._failures) > TRACKED_ADDRESSES:
            self._failures.popitem(last=False)
        await self._audit.record(
            "auth.failed", actor="anonymous", key_prefix=presented_prefix(token),
            client_ip=client_ip, suppressed_since_last=count,
        )  # fmt: skip

    def forget_tenant(self, tenant_id: str) -> None:
        """A deleted tenant: drop its cached record here (and its keys' records, see
        ``KeyService.forget_tenant``), so its keys fail on this process at once."""
        self._tenants.pop(tenant_id, None)
        self._keys.forget_tenant(tenant_id)

    async def _tenant(self, tenant_id: str, *, fresh: bool = False) -> tuple[Tenant, Policy] | None:
        """The tenant with its effective policy, both cached together for a short while."""
        cached = None if fresh else self._tenants.get(tenant_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        if fresh:
            return await self._load_tenant(tenant_id)
        return await self._loading.run(tenant_id, lambda: self._load_tenant(tenant_id))

    async def _load_tenant(self, tenant_id: str) -> tuple[Tenant, Policy] | None:
        tenant = await self._store.get(tenant_id)
        member = (tenant, effective_policy(self._plans, tenant)) if tenant else None
        if len(self._tenants) > TRACKED_ADDRESSES:
            self._tenants.clear()
        self._tenants[tenant_id] = (time.monotonic() + TENANT_CACHE_SECONDS, member)
        return member
