"""Storage failures as errors a client can act on, instead of a bug's 500.

A database that is restarting, unreachable or overloaded (no connection in time, a lock
not granted) answers 503 ``database_unavailable``; a full disk (ours, or the database
server's) answers 507 ``storage_full``; a disk that fails to write answers 503
``storage_error``. The failed write is rolled back whole: every store writes in
transactions. See docs/faults.md.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator

import psycopg
from psycopg import errors as pg_errors
from sqlalchemy import exc as sa_exc

from embedgate.errors import EmbedgateError

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
BROKEN_ERRNOS = frozenset({errno.EIO, errno.EROFS})
SQLITE_BUSY = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED"})


def storage_full() -> EmbedgateError:
    return EmbedgateError(
        507, "The server's storage is full: this request's write was refused. Retry after "
        "the operator frees space.", code="storage_full", headers={"Retry-After": "30"},
    )  # fmt: skip


def storage_error() -> EmbedgateError:
    return EmbedgateError(
        503, "The server could not write to its storage: this request's write was refused. "
        "Retry later; the operator can see why in the server log.", code="storage_error",
        headers={"Retry-After": "30"},
    )  # fmt: skip


def database_unavailable() -> EmbedgateError:
    return EmbedgateError(
        503, "The database is unavailable right now (restarting, unreachable or overloaded); "
        "retry shortly.", code="database_unavailable", headers={"Retry-After": "1"},
    )  # fmt: skip


def client_error(exc: BaseException) -> EmbedgateError | None:
    """The error to answer for ``exc`` when it is a storage failure; None for anything
    else (a bug: 500)."""
    causes = list(_causes(exc))
    if any(_full(cause) for cause in causes):
        return storage_full()
    if any(_broken(cause) for cause in causes):
        return storage_error()
    if any(_unavailable(cause) for cause in causes):
        return database_unavailable()
    return None


def reason(exc: BaseException) -> str:
    """The driver's own error, for the log: never SQLAlchemy's text, which quotes the
    statement's parameters."""
    cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    return f"{type(cause).__name__}: {cause}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the driver error SQLAlchemy wraps, and what they were raised ``from`` (not
    what they were raised while handling: a bug in an ``except`` clause stays a bug)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen or len(seen) > 16:
            continue
        seen.add(id(current))
        yield current
        orig = current.orig if isinstance(current, sa_exc.DBAPIError) else None
        pending += [orig if isinstance(orig, BaseException) else None, current.__cause__]


def _full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL"
    return isinstance(exc, pg_errors.DiskFull)


def _broken(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in BROKEN_ERRNOS
    if isinstance(exc, sqlite3.Error):
        name = str(getattr(exc, "sqlite_errorname", ""))
        return name.startswith("SQLITE_IOERR") or name in ("SQLITE_READONLY", "SQLITE_CANTOPEN")
    return False


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True  # refused, reset, shut down, pool timeout (psycopg_pool's is one too)
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # no pooled connection in time; a connection lost and not regained
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorname", "") in SQLITE_BUSY
