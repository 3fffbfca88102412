"""The state store on SQLAlchemy: SQLite in the data dir by default, PostgreSQL when
``EMBEDGATE_DATABASE_URL`` is set. One implementation; the dialects differ only in setup.

``SqlStateStore`` owns the engine; each record kind has its part over it (``sql_tenants``,
``sql_keys``, ``sql_audit``, ``sql_usage``, ``sql_sessions``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from embedgate.storage.base import AuditStore, KeyStore, SessionStore, TenantStore, UsageStore
from embedgate.storage.migrate import upgrade
from embedgate.storage.sql_audit import SqlAudit
from embedgate.storage.sql_keys import SqlKeys
from embedgate.storage.sql_sessions import SqlSessions
from embedgate.storage.sql_tenants import SqlTenants
from embedgate.storage.sql_usage import SqlUsage

ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
CONNECT_TIMEOUT_S = 5  # a database host that drops packets fails requests, never hangs them


def async_url(database_url: str | None, data_dir: Path) -> URL:
    """The configured URL with an async driver, or the embedded SQLite file."""
    if not database_url:
        return make_url(f"sqlite+aiosqlite:///{data_dir.resolve() / 'embedgate.db'}")
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend not in ASYNC_DRIVERS:
        raise ValueError(f"unsupported database {backend!r}: use postgresql:// or sqlite://")
    return url.set(drivername=ASYNC_DRIVERS[backend])


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    # WAL lets readers run beside the writer; FULL sync: a 2xx is on disk; busy_timeout
    # waits for the writer instead of failing; foreign keys enable ON DELETE CASCADE.
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=5000",
                   "foreign_keys=ON"):  # fmt: skip
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


class SqlStateStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.backend = engine.dialect.name
        self.tenants: TenantStore = SqlTenants(engine)
        self.keys: KeyStore = SqlKeys(engine)
        self.audit: AuditStore = SqlAudit(engine)
        self.usage: UsageStore = SqlUsage(engine)
        self.sessions: SessionStore = SqlSessions(engine)

    @classmethod
    async def open(cls, database_url: str | None, data_dir: Path) -> SqlStateStore:
        url = async_url(database_url, data_dir)
        # Pre-ping: a connection that a database restart broke is replaced, not used.
        options: dict[str, Any] = {"pool_pre_ping": True}
        if url.get_backend_name() == "postgresql":
            options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        engine = create_async_engine(url, **options)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        async with engine.begin() as connection:
            await connection.run_sync(upgrade)
        return cls(engine)

    async def ping(self) -> None:
        async with self._engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        await self._engine.dispose()
