"""The heavy, long-lived resources of one app, built and torn down by its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from embedgate.config.settings import Settings
from embedgate.docstore.stores import StoreHolder
from embedgate.embeddings.cache import EmbeddingCache
from embedgate.embeddings.service import EmbeddingService
from embedgate.engine.registry import ModelRegistry
from embedgate.engine.workpool import WorkPool
from embedgate.keyfiles import ensure_data_dir, load_admin_key, load_server_secret
from embedgate.limits.admission import Limits
from embedgate.limits.memory import Limiter, MemoryLimiter
from embedgate.observability.metrics import Metrics
from embedgate.rerank.service import RerankService
from embedgate.search.service import SearchService
from embedgate.search.two_stage import TwoStage
from embedgate.storage.base import StateStore
from embedgate.storage.sql import SqlStateStore
from embedgate.tenancy.admin import KeyAdmin
from embedgate.tenancy.audit import AuditLog
from embedgate.tenancy.auth import Authenticator, TrustedProxy
from embedgate.tenancy.denials import DenialAudit
from embedgate.tenancy.keys import KeyService, utcnow
from embedgate.tenancy.sessions import ConsoleSessions
from embedgate.tenancy.tenants import TenantService
from embedgate.tenancy.throttle import FailureThrottle
from embedgate.tenancy.usage import UsageMeter

log = logging.getLogger("embedgate")

USAGE_FLUSH_SECONDS = 10.0  # keys' last-use times
METER_FLUSH_SECONDS = 1.0  # usage records: what quotas and bills read
PRUNE_SECONDS = 3600.0  # usage past retention, expired console sessions


@dataclass(frozen=True, slots=True)
class ControlPlane:
    """Tenants, keys, audit and usage on the state store: what the server and the CLI share.

    With ``background`` (the default) a task writes metered usage every second and prunes
    it hourly, until ``aclose``.
    """

    store: StateStore
    audit: AuditLog
    tenants: TenantService
    keys: KeyService
    key_admin: KeyAdmin
    auth: Authenticator
    usage: UsageMeter
    metering: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, settings: Settings, *, create_secret: bool = True, background: bool = True
    ) -> ControlPlane:
        ensure_data_dir(settings.data_dir)
        server_secret = load_server_secret(settings, create=create_secret)
        url = settings.database_url.get_secret_value() if settings.database_url else None
        store = await SqlStateStore.open(url, settings.data_dir)
        audit = AuditLog(store.audit, utcnow)
        tenants = TenantService(store.tenants, audit, settings.plans, utcnow)
        keys = KeyService(store, server_secret)
        throttle = FailureThrottle(settings.auth_failures_per_minute)
        auth = Authenticator(
            keys, store.tenants, audit, settings.plans, _trusted_proxy(settings), throttle
        )
        tenants.on_delete(lambda tenant: auth.forget_tenant(tenant.id))
        usage = UsageMeter(store.usage, utcnow, settings.usage_retention_days)
        metering = asyncio.create_task(_meter(usage), name="usage-meter") if background else None
        key_admin = KeyAdmin(tenants, keys, audit)
        return cls(store, audit, tenants, keys, key_admin, auth, usage, metering)

    async def aclose(self) -> None:
        if self.metering is not None:
            self.metering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.metering
        try:  # every request answered so far is metered before the store closes
            await self.usage.flush()
        except Exception:
            log.error("lost %d usage records: the database refused them at shutdown",
                      self.usage.pending, exc_info=True)  # fmt: skip
        await self.keys.flush_usage()
        await self.store.aclose()


PARSE_THREADS = 2


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    metrics: Metrics
    registry: ModelRegistry
    embeddings: EmbeddingService
    control: ControlPlane
    limits: Limits
    cache: EmbeddingCache
    denials: DenialAudit
    search: SearchService
    stores: StoreHolder
    admin_key: str
    sessions: ConsoleSessions
    background: asyncio.Task[None]
    rerank: RerankService
    started: float = field(default_factory=time.monotonic)
    # Parsing of large /v1/embeddings bodies, off the event loop and fair between tenants.
    parsing: WorkPool = field(default_factory=lambda: WorkPool(PARSE_THREADS, "parse"))

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics) -> Runtime:
        if settings.torch_threads is not None:
            import torch

            torch.set_num_threads(settings.torch_threads)
        admin_key = load_admin_key(settings)
        control = await ControlPlane.open(settings)
        registry = ModelRegistry(settings, metrics)
        try:
            await registry.start()
        except BaseException:
            await registry.aclose()
            await control.aclose()
            raise
        limits = Limits(
            _limiter(settings), control.usage.tokens_since,
            failure_mode=settings.rate_limit_failure_mode,
            lease_ttl_s=settings.request_timeout + 30, clock=utcnow,
        )  # fmt: skip
        cache = EmbeddingCache(int(settings.embedding_cache_mb * 1024 * 1024))
        control.tenants.on_delete(lambda tenant: cache.purge(tenant.uid))
        metrics.watch_cache(cache)
        embeddings = EmbeddingService(registry, settings, metrics, limits, cache)
        stores = StoreHolder(settings)
        await stores.start()
        await stores.sweep(control.store.tenants.uids)
        rerank = RerankService(registry, settings, metrics, limits)
        two_stage = TwoStage(rerank, registry, settings)
        search = SearchService(stores, embeddings, registry, utcnow, two_stage)
        sessions = ConsoleSessions(
            control.store.sessions, control.auth, control.audit, control.keys.digest, admin_key,
            settings.console_session_ttl,
        )  # fmt: skip
        background = asyncio.create_task(_housekeeping(control.keys, sessions), name="housekeeping")
        log.info("API key authentication enabled; rate limits in %s", limits.backend)
        return cls(
            settings, metrics, registry, embeddings, control, limits, cache,
            DenialAudit(control.audit), search, stores, admin_key, sessions, background,
            rerank,
        )  # fmt: skip

    async def aclose(self) -> None:
        self.background.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.background
        await self.registry.aclose()
        await self.denials.drain()
        await self.limits.aclose()
        await self.stores.aclose()
        await self.control.aclose()
        self.parsing.close()


def _limiter(settings: Settings) -> Limiter:
    if settings.redis_url is None:
        return MemoryLimiter()
    from embedgate.limits.redis import RedisLimiter

    return RedisLimiter(settings.redis_url.get_secret_value(), settings.redis_key_prefix)


def _trusted_proxy(settings: Settings) -> TrustedProxy | None:
    networks = settings.proxy_networks()
    if settings.trusted_proxy_secret is None or not networks:
        return None
    log.info("trusted-proxy mode: X-Tenant-ID accepted from %d network(s)", len(networks))
    return TrustedProxy(settings.trusted_proxy_secret.get_secret_value(), networks)


async def _housekeeping(keys: KeyService, sessions: ConsoleSessions) -> None:
    """Keys' last-use times reach the database in one write every few seconds; expired
    console sessions are removed hourly."""
    next_prune = time.monotonic() + 60.0
    while True:
        await asyncio.sleep(USAGE_FLUSH_SECONDS)
        try:
            await keys.flush_usage()
        except Exception:  # the database may be restarting: the next round retries
            log.warning("could not record key usage", exc_info=True)
        if time.monotonic() >= next_prune:
            next_prune = time.monotonic() + PRUNE_SECONDS
            try:
                await sessions.prune()
            except Exception:
                log.warning("could not prune expired console sessions", exc_info=True)


async def _meter(usage: UsageMeter) -> None:
    """Usage records reach the database in one write a second; old ones go hourly."""
    failing = False
    next_prune = time.monotonic() + 60.0  # not at once: a CLI call or a restart loop
    while True:
        await asyncio.sleep(METER_FLUSH_SECONDS)
        try:
            # Shielded: a shutdown must not cut a write in two; aclose waits for it.
            await asyncio.shield(usage.flush())
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_SECONDS
                await usage.prune()
        except Exception:  # the database may be restarting: the records wait for the next round
            if not failing:
                log.warning("could not write usage records; retrying", exc_info=True)
            failing = True
        else:
            if failing:
                log.info("usage records written again")
            failing = False
