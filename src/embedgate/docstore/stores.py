"""Which document store a server uses, opened at start.

PostgreSQL + pgvector when ``vector_url`` is set, or when ``database_url`` is PostgreSQL;
otherwise the embedded store in the data dir. A store that cannot be opened (pgvector not
installed, database down) does not stop the server: embeddings keep working, collection
routes answer 503 ``search_unavailable`` and /health says why, and the store is opened again
on a later request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from embedgate.config.settings import Settings
from embedgate.docstore.base import DocumentStore
from embedgate.errors import EmbedgateError

log = logging.getLogger("embedgate.search")
RETRY_S = 10.0


def vector_url(settings: Settings) -> str | None:
    if settings.vector_url is not None:
        return settings.vector_url.get_secret_value()
    database = settings.database_url.get_secret_value() if settings.database_url else ""
    return database if database.startswith(("postgresql", "postgres")) else None


async def open_store(settings: Settings) -> DocumentStore:
    url = vector_url(settings)
    if url is not None:
        from embedgate.docstore.pgvector.store import PgVectorStore

        return await PgVectorStore.open(
            url, index_retry_s=settings.vector_index_retry_s,
            tenant_concurrency=settings.search_tenant_concurrency,
        )  # fmt: skip
    from embedgate.docstore.local.store import LocalDocumentStore

    return await LocalDocumentStore.open(
        settings.data_dir,
        exact_threshold=settings.search_exact_threshold,
        memory_budget_bytes=int(settings.search_memory_mb * 1024 * 1024),
        max_open_tenants=settings.search_open_tenants,
        tenant_concurrency=settings.search_tenant_concurrency,
    )


class StoreHolder:
    """The opened store, or why there is none yet."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._store: DocumentStore | None = None
        self._error: str | None = None
        self._next_try = 0.0
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._open()

    async def sweep(self, live: Callable[[], Awaitable[set[str]]]) -> None:
        """What crashes left of deleted tenants goes (``DocumentStore.sweep``; ``live``
        gives the uids of the tenants that exist). Run at start, before any request; a
        failure is logged, never fatal: the next start sweeps again."""
        if self._store is None:
            return
        try:
            removed = await self._store.sweep(await live())
        except Exception:
            log.warning("could not sweep deleted tenants' documents", exc_info=True)
            return
        if removed:
            log.info("removed the documents of %d deleted tenant(s)", removed)

    async def get(self) -> DocumentStore:
        if self._store is None and time.monotonic() >= self._next_try:
            async with self._lock:
                if self._store is None:
                    await self._open()
        if self._store is None:
            raise EmbedgateError(
                503, "Collections are unavailable: the document store cannot be opened. "
                "The operator can see why in /health and the server log.",
                code="search_unavailable", headers={"Retry-After": "10"},
            )  # fmt: skip
        return self._store

    async def _open(self) -> None:
        try:
            self._store = await open_store(self._settings)
        except Exception as exc:  # pgvector missing, database down: not fatal
            self._error = type(exc).__name__  # /health is public: the details go to the log
            self._next_try = time.monotonic() + RETRY_S
            log.error("document store unavailable: %s: %s", self._error, exc)
            return
        self._error = None
        log.info("document store: %s", self._store.backend)

    async def health(self) -> dict[str, Any]:
        if self._store is None:
            return {"backend": "pgvector" if vector_url(self._settings) else "local",
                    "ready": False, "error": self._error}  # fmt: skip
        try:
            async with asyncio.timeout(2.0):
                await self._store.ping()
        except Exception as exc:
            return {"backend": self._store.backend, "ready": False,
                    "error": type(exc).__name__}  # fmt: skip
        # The pgvector store tells which index builds crashed its server (pg_index).
        extra = getattr(self._store, "index_health", None)
        return {"backend": self._store.backend, "ready": True, **(extra() if extra else {})}

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()
