"""Which storage failures clients see as 503/507 (real driver errors, raised for real)."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import exc as sa_exc

from embedgate.storage.faults import client_error, reason
from tests.helpers import free_port


def _sqlite_full(path: Path) -> sqlite3.Error:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (x BLOB)")
    connection.execute("PRAGMA max_page_count = 8")
    with pytest.raises(sqlite3.OperationalError) as raised:
        connection.execute("INSERT INTO t VALUES (zeroblob(65536))")  # 16 pages
    connection.close()
    return raised.value


def _sqlite_busy(path: Path) -> sqlite3.Error:
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as raised:
        other.execute("INSERT INTO t VALUES (1)")
    holder.close()
    other.close()
    return raised.value


def _refused() -> psycopg.Error:
    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    return raised.value


def _wrapped(error: Exception) -> sa_exc.DBAPIError:
    return sa_exc.OperationalError("INSERT INTO secrets VALUES (%s)", {"x": "hidden"}, error)


def test_a_full_disk_is_507_storage_full(tmp_path: Path) -> None:
    full = _sqlite_full(tmp_path / "full.db")
    for exc in (full, _wrapped(full), OSError(errno.ENOSPC, "No space left on device"),
                OSError(errno.EFBIG, "File too large")):  # fmt: skip
        error = client_error(exc)
        assert error is not None
        assert (error.status, error.code, error.type) == (507, "storage_full", "server_error")
        assert "write was refused" in error.message


def test_an_unreachable_or_busy_database_is_503(tmp_path: Path) -> None:
    refused = _refused()
    for exc in (refused, _wrapped(refused), _sqlite_busy(tmp_path / "busy.db")):
        error = client_error(exc)
        assert error is not None
        assert (error.status, error.code) == (503, "database_unavailable")
        assert error.headers == {"Retry-After": "1"}


def test_a_failing_disk_is_503_storage_error() -> None:
    error = client_error(OSError(errno.EIO, "Input/output error"))
    assert error is not None
    assert (error.status, error.code) == (503, "storage_error")


def test_anything_else_stays_a_bug() -> None:
    for exc in (ValueError("bug"), OSError(errno.ENOENT, "gone"), KeyError("x"),
                _wrapped(psycopg.errors.UndefinedTable("no such table"))):  # fmt: skip
        assert client_error(exc) is None


def test_the_log_line_names_the_driver_error_not_the_parameters() -> None:
    text = reason(_wrapped(_refused()))
    assert text.startswith("OperationalError: connection failed")
    assert "hidden" not in text
    assert "INSERT" not in text
