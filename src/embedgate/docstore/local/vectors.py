"""The loaded vector indexes of the local store: load, keep in step, search.

Called under the tenant's lock, with its open database. An index is loaded on first use
(vectors from SQLite, the saved graph attached and caught up, or built), changed after
every committed write while it is loaded, and saved when it has drifted by a tenth of
its size from its files.
"""

from __future__ import annotations

import functools
import logging
import sqlite3

from embedgate.docstore.base import Filter, Vector
from embedgate.docstore.local import docs as local_docs
from embedgate.docstore.local import index_files as local_index_files
from embedgate.docstore.local.cache import Tenant, TenantCache
from embedgate.docstore.local.index import Scored, VectorIndex

log = logging.getLogger(__name__)
CollectionKey = tuple[int, int, int]  # (id, dimensions, version)


class Vectors:
    def __init__(self, cache: TenantCache, exact_threshold: int) -> None:
        self._cache = cache
        self.exact_threshold = exact_threshold

    def search(
        self, tenant: Tenant, conn: sqlite3.Connection, key: CollectionKey, query: Vector,
        top_k: int, flt: Filter | None,
    ) -> Scored:  # fmt: skip
        index = self.index(tenant, conn, key)
        if flt:  # a broad filter is checked on the graph's candidates only
            keep = functools.partial(local_docs.matching, conn, key[0], flt)
            found = index.search_broad(query, top_k, keep)
            if found is not None:
                return found
        allowed = local_docs.labels(conn, key[0], flt) if flt else None
        return index.search(query, top_k, allowed)

    def index(self, tenant: Tenant, conn: sqlite3.Connection, key: CollectionKey) -> VectorIndex:
        """The collection's index, loaded (and caught up) on first use."""
        collection_id, dimensions, version = key
        index = self._cache.index(tenant, collection_id)
        if index is not None and index.version == version:
            return index
        labels, changed, matrix = local_docs.all_vectors(conn, collection_id, dimensions)
        index = VectorIndex(dimensions, version, self.exact_threshold)
        index.load(labels, matrix)
        graph = index.count > self.exact_threshold
        if graph and not local_index_files.attach(index, tenant.directory, collection_id,
                                                  changed):  # fmt: skip
            index.ensure_graph()
        self._keep(tenant, collection_id, index)
        return index

    def apply(self, tenant: Tenant, key: CollectionKey,
              changes: list[local_docs.Change]) -> None:  # fmt: skip
        """Bring a loaded index in step with a committed write (else it loads later)."""
        index = self._cache.index(tenant, key[0])
        if index is None:
            return
        try:
            index.apply(dict(changes), key[2] + 1)
        except (ValueError, RuntimeError) as exc:  # committed anyway: reload on next use
            log.warning("dropping a vector index of tenant %s: %s", tenant.key, exc)
            self._cache.drop_index(tenant, key[0])
            return
        self._keep(tenant, key[0], index)

    def _keep(self, tenant: Tenant, collection_id: int, index: VectorIndex) -> None:
        """Save a graph that has drifted far from its files, then account for its size."""
        if index.dropped:
            local_index_files.remove(tenant.directory, collection_id)
            index.dropped = False
        local_index_files.save_changed(index, tenant.directory, collection_id, drift=0.1)
        self._cache.put_index(tenant, collection_id, index)
