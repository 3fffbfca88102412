"""The embedded store's deleted tenants: their writes are refused, across a restart too.

A delete adds the tenant's directory name to ``<data_dir>/tenants/deleted`` (written and
fsynced before the directory goes) and to the set every write checks under the tenant's
lock, so a write that a cached key lets through in the moment after the delete fails
instead of bringing the directory back. The file is read again whenever it changes, so a
delete by another process on the same data dir (``embedgate tenants delete``) bites too.
The start-up sweep (``LocalDocumentStore.sweep``) keeps only the names of tenants that
still exist (a delete that died half-way): the others' uids are never used again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

FILE_NAME = "deleted"


class Tombstones:
    def __init__(self, root: Path) -> None:
        self._path = root / FILE_NAME
        self._lock = threading.Lock()
        self._names: set[str] = set()
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file read

    def __contains__(self, name: object) -> bool:
        with self._lock:
            self._reload()
            return name in self._names

    def add(self, name: str) -> None:
        with self._lock:
            self._reload()
            if name in self._names:
                return
            with self._path.open("a", encoding="ascii") as out:
                out.write(name + "\n")
                out.flush()
                os.fsync(out.fileno())
            self._names.add(name)
            self._seen = _stamp(self._path)

    def keep_only(self, names: Iterable[str]) -> None:
        """Forget every name but ``names`` (atomically: a crash keeps the old file)."""
        with self._lock:
            self._reload()
            self._names &= set(names)
            temporary = self._path.with_suffix(".tmp")
            with temporary.open("w", encoding="ascii") as out:
                out.writelines(name + "\n" for name in sorted(self._names))
                out.flush()
                os.fsync(out.fileno())
            temporary.replace(self._path)
            self._seen = _stamp(self._path)

    def _reload(self) -> None:
        stamp = _stamp(self._path)
        if stamp == self._seen:
            return
        text = self._path.read_text(encoding="ascii") if stamp is not None else ""
        self._names = {line for line in text.split() if line}
        self._seen = stamp


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_mtime_ns, stat.st_size)
