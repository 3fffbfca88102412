"""One tenant's SQLite document database: schema, connection settings, collection rows.

The database is the source of truth. Documents keep their vector (float32 little-endian
BLOB) and a ``label``, the integer key of the vector indexes, never reused
(AUTOINCREMENT); ``metadata_values`` holds their top-level scalar metadata for filters.
Each collection has a ``version`` that every write increments in the same transaction,
and each document the version that last changed its vector: an index saved at version v
catches up by re-reading the documents with a later version. Collection ids are never
reused either (AUTOINCREMENT), and the database of a deleted tenant uid is never made
again (tombstones): a handle bound to an id (``base.CollectionHandle``) can never meet
another collection under it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from embedgate.docstore.base import Collection

Lookup = Literal["name", "id"]  # by its name, or by its id once a handle is bound to it
Key = tuple[int, int, int]  # a collection's (id, dimensions, version)

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    dimensions INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    created_at TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS documents (
    label INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    version INTEGER NOT NULL,
    UNIQUE (collection_id, id)
);
CREATE INDEX IF NOT EXISTS documents_by_version ON documents (collection_id, version);
CREATE TABLE IF NOT EXISTS metadata_values (
    collection_id INTEGER NOT NULL,
    label INTEGER NOT NULL,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    value NOT NULL,
    PRIMARY KEY (collection_id, key, value, type, label)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metadata_values_by_label ON metadata_values (label);
CREATE VIRTUAL TABLE IF NOT EXISTS documents_fts
    USING fts5 (body, tokenize = 'porter unicode61 remove_diacritics 2');
"""
DB_NAME = "documents.db"


def connect(directory: Path) -> sqlite3.Connection:
    """Open (creating with mode 0600 if needed) the tenant's database, schema applied."""
    path = directory / DB_NAME
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # -wal/-shm copy this mode
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")  # a commit survives power loss, not only kill -9
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA secure_delete = ON")  # deleted documents are zeroed, not left behind
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA cache_size = -512")  # KiB: 256 open tenants, 128 MiB at most
        if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            with transaction(conn):
                for statement in SCHEMA.split(";\n"):
                    if statement.strip():  # executescript() would COMMIT the transaction
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def insert_collection(conn: sqlite3.Connection, collection: Collection) -> bool:
    """False when the name is taken."""
    try:
        conn.execute(
            "INSERT INTO collections (name, model, dimensions, metadata, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (collection.name, collection.model, collection.dimensions,
             dumps(collection.metadata), collection.created_at.isoformat()),
        )  # fmt: skip
    except sqlite3.IntegrityError:
        return False
    return True


_COLLECTION = (
    "SELECT c.id, c.name, c.model, c.dimensions, c.metadata, c.created_at, "
    "(SELECT COUNT(*) FROM documents AS d WHERE d.collection_id = c.id) FROM collections AS c"
)


def select_collection(
    conn: sqlite3.Connection, by: Lookup, value: str | int
) -> tuple[int, Collection] | None:
    """The collection's id and row."""
    where = "c.name = ?" if by == "name" else "c.id = ?"
    row = conn.execute(f"{_COLLECTION} WHERE {where}", (value,)).fetchone()
    return None if row is None else (row[0], _collection(row[1:]))


def select_collections(conn: sqlite3.Connection) -> list[Collection]:
    return [_collection(row[1:]) for row in conn.execute(f"{_COLLECTION} ORDER BY c.name")]


def _collection(row: tuple[Any, ...]) -> Collection:
    name, model, dims, metadata, created_at, count = row
    return Collection(name, model, dims, json.loads(metadata),
                      datetime.fromisoformat(created_at), count)  # fmt: skip


def collection_key(conn: sqlite3.Connection, by: Lookup, value: str | int) -> Key | None:
    """``(id, dimensions, version)`` of the collection."""
    where = "name = ?" if by == "name" else "id = ?"
    row = conn.execute(
        f"SELECT id, dimensions, version FROM collections WHERE {where}",  # noqa: S608
        (value,),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def collection_ids(conn: sqlite3.Connection) -> set[int]:
    return {row[0] for row in conn.execute("SELECT id FROM collections")}


def delete_collection_rows(conn: sqlite3.Connection, collection_id: int) -> None:
    conn.execute(
        "DELETE FROM documents_fts WHERE rowid IN "
        "(SELECT label FROM documents WHERE collection_id = ?)",
        (collection_id,),
    )
    conn.execute("DELETE FROM metadata_values WHERE collection_id = ?", (collection_id,))
    conn.execute("DELETE FROM documents WHERE collection_id = ?", (collection_id,))
    conn.execute("DELETE FROM collections WHERE id = ?", (collection_id,))


def purge(conn: sqlite3.Connection) -> None:
    """Leave no trace of deleted rows: merge the FTS segments (which still hold deleted
    terms until merged), then checkpoint and truncate the WAL (which holds old pages)."""
    with transaction(conn):
        conn.execute("INSERT INTO documents_fts (documents_fts) VALUES ('optimize')")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
