"""The heavy, long-lived resources of one app, built and torn down by its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from embedgate.config import Settings
from embedgate.keyfiles import ensure_data_dir, load_admin_key, load_server_secret
from embedgate.services.admin import KeyAdmin
from embedgate.services.audit import AuditLog
from embedgate.services.auth import Authenticator, TrustedProxy
from embedgate.services.embeddings import EmbeddingService
from embedgate.services.keys import KeyService, utcnow
from embedgate.services.metrics import Metrics
from embedgate.services.registry import ModelRegistry
from embedgate.services.tenants import TenantService
from embedgate.storage.base import StateStore
from embedgate.storage.sql import SqlStateStore

log = logging.getLogger("embedgate")

USAGE_FLUSH_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class ControlPlane:
    """Tenants, keys and audit on the state store: what the server and the CLI share."""

    store: StateStore
    audit: AuditLog
    tenants: TenantService
    keys: KeyService
    key_admin: KeyAdmin
    auth: Authenticator

    @classmethod
    async def open(cls, settings: Settings, *, create_secret: bool = True) -> ControlPlane:
        ensure_data_dir(settings.data_dir)
        server_secret = load_server_secret(settings, create=create_secret)
        url = settings.database_url.get_secret_value() if settings.database_url else None
        store = await SqlStateStore.open(url, settings.data_dir)
        audit = AuditLog(store, utcnow)
        tenants = TenantService(store, audit, settings.plans, utcnow)
        keys = KeyService(store, server_secret)
        auth = Authenticator(keys, store, audit, settings.plans, _trusted_proxy(settings))
        return cls(store, audit, tenants, keys, KeyAdmin(tenants, keys, audit), auth)

    async def aclose(self) -> None:
        await self.keys.flush_usage()
        await self.store.aclose()


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    metrics: Metrics
    registry: ModelRegistry
    embeddings: EmbeddingService
    control: ControlPlane
    admin_key: str
    background: asyncio.Task[None]

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
        embeddings = EmbeddingService(registry, settings, metrics)
        background = asyncio.create_task(_flush_key_usage(control.keys), name="key-usage")
        log.info("API key authentication enabled")
        return cls(settings, metrics, registry, embeddings, control, admin_key, background)

    async def aclose(self) -> None:
        self.background.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.background
        await self.registry.aclose()
        await self.control.aclose()


def _trusted_proxy(settings: Settings) -> TrustedProxy | None:
    networks = settings.proxy_networks()
    if settings.trusted_proxy_secret is None or not networks:
        return None
    log.info("trusted-proxy mode: X-Tenant-ID accepted from %d network(s)", len(networks))
    return TrustedProxy(settings.trusted_proxy_secret.get_secret_value(), networks)


async def _flush_key_usage(keys: KeyService) -> None:
    """Keys' last-use times reach the database in one write every few seconds."""
    while True:
        await asyncio.sleep(USAGE_FLUSH_SECONDS)
        try:
            await keys.flush_usage()
        except Exception:  # the database may be restarting: the next round retries
            log.warning("could not record key usage", exc_info=True)
