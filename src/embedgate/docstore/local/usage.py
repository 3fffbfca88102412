"""What one tenant's SQLite database holds, for the plan's storage caps and /v1/me.

Counted as ``base.Usage`` says: UTF-8 bytes of texts and of metadata as stored (compact
JSON), the vector BLOBs (4 bytes a dimension), and the collections' metadata. The byte
count reads every document row of the tenant (SQLite keeps no running total), so it is
taken only where a byte cap or /v1/me asks for it; the counts alone are index scans.
"""

from __future__ import annotations

import sqlite3

from embedgate.docstore.base import Limits, Usage, capping, check_limits

_COLLECTIONS = "SELECT count(*), coalesce(sum(length(CAST(metadata AS BLOB))), 0) FROM collections"
_DOCUMENTS = "SELECT count(*) FROM documents"
_DOCUMENT_BYTES = (
    "SELECT count(*), coalesce(sum(length(CAST(text AS BLOB)) + length(CAST(metadata AS BLOB))"
    " + length(vector)), 0) FROM documents"
)


def usage(conn: sqlite3.Connection, *, with_bytes: bool = True) -> Usage:
    collections, collection_bytes = conn.execute(_COLLECTIONS).fetchone()
    if not with_bytes:
        (documents,) = conn.execute(_DOCUMENTS).fetchone()
        return Usage(int(collections), int(documents), 0)
    documents, document_bytes = conn.execute(_DOCUMENT_BYTES).fetchone()
    return Usage(int(collections), int(documents), int(collection_bytes) + int(document_bytes))


def check(conn: sqlite3.Connection, limits: Limits | None) -> None:
    """Inside a write's transaction: over a cap, it raises and so rolls back."""
    if (capped := capping(limits)) is not None:
        check_limits(capped, usage(conn, with_bytes=capped.stored_bytes is not None))
