"""What the local store keeps open: SQLite connections and loaded vector indexes.

Both are LRU caches: at most ``max_open`` tenants have their database open (so 10,000
tenants are not 10,000 open files), and loaded indexes stay within ``budget`` bytes, the
least recently used being saved (when their graph changed) and dropped. An entry is only
closed or evicted with its tenant's lock taken without waiting: a tenant in use is never
touched, and two threads evicting each other's tenants never deadlock (the caches may
then exceed their bounds until the next eviction).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

from embedgate.docstore.local import db as local_db
from embedgate.docstore.local import index_files as local_index_files
from embedgate.docstore.local.index import VectorIndex

IndexKey = tuple[str, int]  # (tenant directory name, collection id)


class Tenant:
    """One tenant's directory, lock and (when open) database connection."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lock = threading.RLock()  # one reader or writer of this tenant at a time
        self.conn: sqlite3.Connection | None = None

    @property
    def key(self) -> str:
        return self.directory.name


def directory_name(tenant_id: str) -> str:
    """The tenant's directory: a hash, so no user-supplied text ever reaches a path."""
    return hashlib.sha256(tenant_id.encode("utf-8")).hexdigest()[:32]


class TenantCache:
    def __init__(self, root: Path, *, max_open: int, budget: int) -> None:
        self.root = root  # <data_dir>/tenants
        self.max_open = max(1, max_open)
        self.budget = budget
        self._lock = threading.Lock()  # guards the maps below, never held while waiting
        self._tenants: weakref.WeakValueDictionary[str, Tenant] = weakref.WeakValueDictionary()
        self._open: OrderedDict[str, Tenant] = OrderedDict()
        self._indexes: OrderedDict[IndexKey, tuple[Tenant, VectorIndex]] = OrderedDict()
        self._sizes: dict[IndexKey, int] = {}

    def tenant(self, tenant_id: str) -> Tenant:
        name = directory_name(tenant_id)
        with self._lock:
            found = self._tenants.get(name)
            if found is None:
                found = self._tenants[name] = Tenant(self.root / name)
            return found

    def connection(self, tenant: Tenant, *, create: bool) -> sqlite3.Connection | None:
        """The tenant's database (caller holds its lock); None if absent and not ``create``."""
        if tenant.conn is None:
            if not create and not (tenant.directory / local_db.DB_NAME).exists():
                return None
            tenant.directory.mkdir(mode=0o700, exist_ok=True)
            tenant.directory.chmod(0o700)
            tenant.conn = local_db.connect(tenant.directory)
            local_index_files.remove_orphans(tenant.directory, local_db.collection_ids(tenant.conn))
        with self._lock:
            self._open[tenant.key] = tenant
            self._open.move_to_end(tenant.key)
            victims = [t for t in self._open.values() if t is not tenant]
            excess = len(self._open) - self.max_open
        for victim in victims:  # least recently used first, skipping busy ones
            if excess <= 0:
                break
            excess -= self._close_if_idle(victim)
        return tenant.conn

    def index(self, tenant: Tenant, collection_id: int) -> VectorIndex | None:
        key = (tenant.key, collection_id)
        with self._lock:
            entry = self._indexes.get(key)
            if entry is None:
                return None
            self._indexes.move_to_end(key)
            return entry[1]

    def put_index(self, tenant: Tenant, collection_id: int, index: VectorIndex) -> None:
        """Track ``index`` (or its new size), then evict others over the budget."""
        key = (tenant.key, collection_id)
        with self._lock:
            self._indexes[key] = (tenant, index)
            self._indexes.move_to_end(key)
            self._sizes[key] = index.nbytes
            excess = sum(self._sizes.values()) - self.budget
            victims = [k for k in self._indexes if k != key] if excess > 0 else []
        for victim in victims:
            if excess <= 0:
                break
            excess -= self._evict_if_idle(victim)

    def drop_index(self, tenant: Tenant, collection_id: int) -> None:
        with self._lock:
            self._indexes.pop((tenant.key, collection_id), None)
            self._sizes.pop((tenant.key, collection_id), None)

    def drop_tenant(self, tenant: Tenant) -> None:
        """Forget everything of ``tenant`` (caller holds its lock), saving nothing."""
        with self._lock:
            for key in [k for k in self._indexes if k[0] == tenant.key]:
                del self._indexes[key], self._sizes[key]
            self._open.pop(tenant.key, None)
        if tenant.conn is not None:
            tenant.conn.close()
            tenant.conn = None

    def loaded_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    def close_all(self) -> None:
        with self._lock:
            keys, tenants = list(self._indexes), list(self._open.values())
        for key in keys:
            self._evict(key, wait=True)
        for tenant in tenants:
            with tenant.lock:
                self._close(tenant)

    def _evict_if_idle(self, key: IndexKey) -> int:
        return self._evict(key, wait=False)

    def _evict(self, key: IndexKey, *, wait: bool) -> int:
        with self._lock:
            entry = self._indexes.get(key)
        if entry is None or not entry[0].lock.acquire(blocking=wait):
            return 0
        tenant, index = entry
        try:
            with self._lock:
                if self._indexes.get(key) is not entry:
                    return 0
                del self._indexes[key]
                size = self._sizes.pop(key, 0)
            local_index_files.save_changed(index, tenant.directory, key[1])
            return size
        finally:
            tenant.lock.release()

    def _close_if_idle(self, tenant: Tenant) -> int:
        """1 if it was closed, 0 if in use."""
        if not tenant.lock.acquire(blocking=False):
            return 0
        try:
            self._close(tenant)
        finally:
            tenant.lock.release()
        return 1

    def _close(self, tenant: Tenant) -> None:
        with self._lock:
            if self._open.get(tenant.key) is tenant:
                del self._open[tenant.key]
        if tenant.conn is not None:
            tenant.conn.close()
            tenant.conn = None
