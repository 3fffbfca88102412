"""One server per data dir: `embedgate serve` holds an exclusive ``flock`` on
``<data_dir>/serve.lock`` for as long as it runs, with its pid and URL written inside.

The kernel drops the lock when the process ends, however it ends (``kill -9`` included), so
a stale lock file never blocks a restart. The CLI reads the file to tell the user that a
server is running and where to reach it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LOCK_NAME = "serve.lock"


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    url: str


class DataDirBusy(RuntimeError):
    """Another `embedgate serve` holds the data dir."""

    def __init__(self, data_dir: Path, holder: Holder | None) -> None:
        who = f"pid {holder.pid}, {holder.url}" if holder else "pid unknown"
        super().__init__(
            f"another `embedgate serve` ({who}) already uses the data dir {data_dir.resolve()}:"
            " stop it, or give this one another --data-dir (EMBEDGATE_DATA_DIR)"
        )


def acquire(data_dir: Path, url: str) -> IO[str]:
    """Lock ``data_dir`` for this process; keep the returned file open while serving."""
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    handle = os.fdopen(fd, "r+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(handle)
        handle.close()
        raise DataDirBusy(data_dir, holder) from None
    handle.truncate(0)
    handle.write(json.dumps({"pid": os.getpid(), "url": url}) + "\n")
    handle.flush()
    return handle


def holder(data_dir: Path) -> Holder | None:
    """The server that holds ``data_dir`` now, or None when no server runs on it."""
    try:
        handle = (data_dir / LOCK_NAME).open(encoding="utf-8")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(handle) or Holder(0, "")
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def _read(handle: IO[str]) -> Holder | None:
    with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
        handle.seek(0)
        data = json.loads(handle.read())
        return Holder(int(data["pid"]), str(data["url"]))
    return None
