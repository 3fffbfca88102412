"""Web console sessions: an API key is exchanged once for a random token that lives in an
HttpOnly cookie, never in a URL or in page script.

The store keeps only an HMAC digest of the token, so a database dump opens no session, and
the CSRF token is derived from the token under the same server secret, so nothing else is
stored and a reloaded page gets its CSRF token back. A tenant session re-checks its key and
tenant on every request; an admin session holds a digest of the admin key it was opened
with and dies when the server's admin key changes.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from embedgate.errors import EmbedgateError
from embedgate.storage.base import SessionStore
from embedgate.storage.records import ConsoleSession
from embedgate.tenancy.audit import AuditLog
from embedgate.tenancy.auth import Authenticator, Caller, CallerDenied, invalid_api_key
from embedgate.tenancy.keys import utcnow

SESSION_COOKIE = "embedgate_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_BYTES = 32  # 256 bits, urlsafe base64 in the cookie


@dataclass(frozen=True, slots=True)
class Opened:
    session: ConsoleSession
    caller: Caller | None  # a tenant session's, as of now; None for the admin


def csrf_failed() -> EmbedgateError:
    return EmbedgateError(
        403,
        "This request needs the X-CSRF-Token header of your console session.",
        code="csrf_failed",
    )


class ConsoleSessions:
    def __init__(
        self, store: SessionStore, auth: Authenticator, audit: AuditLog,
        mac: Callable[[str], str], admin_key: str, ttl_s: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:  # fmt: skip
        self._store = store
        self._auth = auth
        self._audit = audit
        self._mac = mac  # HMAC-SHA256 under the server secret; each use has its own prefix
        self._admin_key = admin_key
        self._admin_digest = mac(f"console-admin:{admin_key}")
        self.ttl = timedelta(seconds=ttl_s)
        self._clock = clock

    def csrf_token(self, token: str) -> str:
        return self._mac(f"console-csrf:{token}")

    def check_csrf(self, token: str, method: str, presented: str | None) -> None:
        """Unsafe methods must echo the session's CSRF token: another site can make the
        browser send the cookie, but cannot read the token."""
        if method in SAFE_METHODS:
            return
        if not hmac.compare_digest((presented or "").encode(), self.csrf_token(token).encode()):
            raise csrf_failed()

    async def open(self, presented: str, client_ip: str | None) -> tuple[str, Opened]:
        """A new session for the admin key or a tenant key, which must work as it would on
        the API (else 401, or 403 for a suspended tenant or a disallowed address)."""
        self._auth.throttle.check(client_ip)  # a throttled address's key is not even read
        now = self._clock()
        caller = None
        if hmac.compare_digest(presented.encode(), self._admin_key.encode()):
            session = ConsoleSession("admin", now, now + self.ttl, admin_digest=self._admin_digest)
        else:
            found = await self._auth.authenticate(presented, client_ip)
            # again, uncached: a key revoked or a tenant suspended a moment ago opens nothing
            caller = await self._auth.from_session(found.tenant.id, found.key.id, client_ip)
            session = ConsoleSession("tenant", now, now + self.ttl, caller.tenant.id,
                                     caller.key.id, caller.key.prefix)  # fmt: skip
        token = secrets.token_urlsafe(TOKEN_BYTES)
        await self._store.add(session, self._digest(token))
        await self._record("console.login", session, client_ip)
        return token, Opened(session, caller)

    async def find(self, token: str) -> ConsoleSession | None:
        """The live session of ``token``; an expired or stale one is removed on sight."""
        digest = self._digest(token)
        session = await self._store.by_digest(digest)
        if session is None:
            return None
        stale = session.kind == "admin" and not hmac.compare_digest(
            (session.admin_digest or "").encode(), self._admin_digest.encode()
        )
        if stale or session.expires_at <= self._clock():
            await self._store.delete(digest)
            return None
        return session

    async def current(self, token: str, client_ip: str | None) -> Opened:
        """What ``GET /console/session`` shows: 401 once the session no longer stands."""
        session = await self.find(token)
        if session is None:
            raise invalid_api_key()
        if session.kind == "admin":
            return Opened(session, None)
        try:
            return Opened(session, await self._recheck(token, session, client_ip))
        except CallerDenied as denied:
            if denied.caller.tenant.status != "active":
                raise invalid_api_key() from None
            raise

    async def caller(
        self, token: str, method: str, csrf: str | None, client_ip: str | None
    ) -> Caller:
        """A tenant session's caller: exactly its key's, re-checked now."""
        session = await self.find(token)
        if session is None or session.kind != "tenant":
            raise invalid_api_key()
        self.check_csrf(token, method, csrf)
        return await self._recheck(token, session, client_ip)

    async def admin(self, token: str, method: str, csrf: str | None) -> ConsoleSession:
        session = await self.find(token)
        if session is None or session.kind != "admin":
            raise invalid_api_key()
        self.check_csrf(token, method, csrf)
        return session

    async def close(self, token: str, csrf: str | None, client_ip: str | None) -> None:
        """Logout: the session is deleted server-side, so the cookie opens nothing again."""
        self.check_csrf(token, "POST", csrf)
        digest = self._digest(token)
        session = await self._store.by_digest(digest)
        if session is not None and await self._store.delete(digest):
            await self._record("console.logout", session, client_ip)

    async def discard(self, token: str) -> None:
        """A session replaced by a new login in the same browser."""
        await self._store.delete(self._digest(token))

    async def prune(self) -> int:
        return await self._store.delete_expired(self._clock())

    async def _recheck(self, token: str, session: ConsoleSession, client_ip: str | None) -> Caller:
        try:
            return await self._auth.from_session(
                session.tenant_id or "", session.key_id or "", client_ip
            )
        except CallerDenied as denied:
            if denied.caller.tenant.status != "active":  # suspension ends it; an address
                await self.discard(token)  # that is not allowed does not
            raise
        except EmbedgateError:  # the key was revoked or expired, or its tenant deleted
            await self.discard(token)
            raise

    def _digest(self, token: str) -> str:
        return self._mac(f"console-session:{token}")

    async def _record(self, event: str, session: ConsoleSession, client_ip: str | None) -> None:
        actor = "admin" if session.kind == "admin" else f"tenant:{session.tenant_id}"
        await self._audit.record(
            event, actor=actor, tenant_id=session.tenant_id, key_prefix=session.key_prefix,
            client_ip=client_ip, kind=session.kind,
        )  # fmt: skip
