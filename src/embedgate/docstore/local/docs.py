"""Document rows of one tenant's SQLite database: writes, reads, keyword search.

Every function runs on a connection the caller holds the tenant's lock for; writes run
inside a ``transaction``. Vectors are float32 little-endian BLOBs. The SQL built here with
f-strings only ever adds ``?`` placeholders and ``local_filter``'s fixed fragments (the
``noqa: S608``): every value is a bound parameter.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from embedgate.docstore.base import Document, Filter, Hit, Upsert, Vector
from embedgate.docstore.local.db import dumps
from embedgate.docstore.local.filter import filter_sql, write_index
from embedgate.docstore.local.index import Labels
from embedgate.docstore.local.text import fts_body, fts_query

CHUNK = 500  # bound parameters per IN (...) list
Change = tuple[int, Vector | None]  # (label, new vector), or (label, None): removed


def to_blob(vector: Vector, dimensions: int) -> bytes:
    array = np.asarray(vector, dtype="<f4")
    if array.shape != (dimensions,):
        raise ValueError(f"a vector of this collection has {dimensions} dimensions")
    return array.tobytes()


def from_blob(blob: bytes) -> Vector:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def write_documents(
    conn: sqlite3.Connection, collection: tuple[int, int, int], items: Sequence[Upsert]
) -> list[Change]:
    """Insert or replace documents; return the index changes. Bumps the collection version."""
    collection_id, dimensions, version = collection
    version += 1
    changes: list[Change] = []
    for item in items:
        doc = item.document
        row = conn.execute(
            "SELECT label, text_hash FROM documents WHERE collection_id = ? AND id = ?",
            (collection_id, doc.id),
        ).fetchone()
        if item.vector is None:
            if row is None or row[1] != item.text_hash:
                raise ValueError("a document without a vector must exist with the same text")
            conn.execute("UPDATE documents SET metadata = ? WHERE label = ?",
                         (dumps(doc.metadata), row[0]))  # fmt: skip
            write_index(conn, row[0], collection_id, doc.metadata)
            continue
        blob = to_blob(item.vector, dimensions)
        values = (doc.text, dumps(doc.metadata), item.text_hash, blob, version)
        if row is None:
            cursor = conn.execute(
                "INSERT INTO documents (text, metadata, text_hash, vector, version, "
                "collection_id, id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*values, collection_id, doc.id),
            )
            label = int(cursor.lastrowid or 0)
            conn.execute("INSERT INTO documents_fts (rowid, body) VALUES (?, ?)",
                         (label, fts_body(doc.text)))  # fmt: skip
        else:
            label = row[0]
            conn.execute("UPDATE documents SET text = ?, metadata = ?, text_hash = ?, "
                         "vector = ?, version = ? WHERE label = ?", (*values, label))  # fmt: skip
            conn.execute("UPDATE documents_fts SET body = ? WHERE rowid = ?",
                         (fts_body(doc.text), label))  # fmt: skip
        write_index(conn, label, collection_id, doc.metadata)
        changes.append((label, from_blob(blob)))
    conn.execute("UPDATE collections SET version = ? WHERE id = ?", (version, collection_id))
    return changes


def delete_document(conn: sqlite3.Connection, collection: tuple[int, int, int],
                    doc_id: str) -> Change | None:  # fmt: skip
    collection_id, _, version = collection
    row = conn.execute("SELECT label FROM documents WHERE collection_id = ? AND id = ?",
                       (collection_id, doc_id)).fetchone()  # fmt: skip
    if row is None:
        return None
    conn.execute("DELETE FROM documents_fts WHERE rowid = ?", (row[0],))
    conn.execute("DELETE FROM metadata_values WHERE label = ?", (row[0],))
    conn.execute("DELETE FROM documents WHERE label = ?", (row[0],))
    conn.execute("UPDATE collections SET version = ? WHERE id = ?", (version + 1, collection_id))
    return (row[0], None)


def text_hashes(conn: sqlite3.Connection, collection_id: int, ids: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start : start + CHUNK])
        marks = ",".join("?" * len(chunk))
        where = f"collection_id = ? AND id IN ({marks})"
        rows = conn.execute(f"SELECT id, text_hash FROM documents WHERE {where}",  # noqa: S608
                            (collection_id, *chunk))  # fmt: skip
        found.update(rows)
    return found


def get_document(conn: sqlite3.Connection, collection_id: int, doc_id: str) -> Document | None:
    row = conn.execute("SELECT id, text, metadata FROM documents WHERE collection_id = ? "
                       "AND id = ?", (collection_id, doc_id)).fetchone()  # fmt: skip
    return None if row is None else Document(row[0], row[1], json.loads(row[2]))


def get_vector(conn: sqlite3.Connection, collection_id: int, doc_id: str) -> Vector | None:
    row = conn.execute("SELECT vector FROM documents WHERE collection_id = ? AND id = ?",
                       (collection_id, doc_id)).fetchone()  # fmt: skip
    return None if row is None else from_blob(row[0])


def list_documents(conn: sqlite3.Connection, collection_id: int, after: str | None,
                   limit: int) -> list[Document]:  # fmt: skip
    rows = conn.execute(
        "SELECT id, text, metadata FROM documents WHERE collection_id = ? AND id > ? "
        "ORDER BY id LIMIT ?",
        (collection_id, after if after is not None else "", limit + 1),
    )
    return [Document(i, text, json.loads(meta)) for i, text, meta in rows]


def export_documents(conn: sqlite3.Connection, collection_id: int, after: str | None,
                     limit: int) -> list[Upsert]:  # fmt: skip
    rows = conn.execute(
        "SELECT id, text, metadata, text_hash, vector FROM documents WHERE collection_id = ? "
        "AND id > ? ORDER BY id LIMIT ?",
        (collection_id, after if after is not None else "", limit),
    )
    return [Upsert(Document(i, text, json.loads(meta)), digest, from_blob(blob))
            for i, text, meta, digest, blob in rows]  # fmt: skip


def all_vectors(conn: sqlite3.Connection, collection_id: int, dimensions: int
                ) -> tuple[Labels, Labels, npt.NDArray[np.float32]]:  # fmt: skip
    """The collection's labels, the versions that last changed them, and their vectors."""
    query = "SELECT label, version, vector FROM documents WHERE collection_id = ? ORDER BY 1"
    rows = conn.execute(query, (collection_id,)).fetchall()
    labels = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    versions = np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(row[2] for row in rows), dtype="<f4")
    return labels, versions, matrix.reshape(len(rows), dimensions).astype(np.float32)


def labels(conn: sqlite3.Connection, collection_id: int, flt: Filter) -> Labels:
    """The sorted labels of the documents that match ``flt``."""
    select, params = filter_sql(collection_id, flt)
    rows = conn.execute(f"{select} ORDER BY 1", params)
    return np.fromiter((row[0] for row in rows), dtype=np.int64)


def matching(conn: sqlite3.Connection, collection_id: int, flt: Filter,
             among: Labels) -> Labels:  # fmt: skip
    """Those of the labels ``among`` that match ``flt``, sorted."""
    select, params = filter_sql(collection_id, flt, [int(label) for label in among])
    rows = conn.execute(f"{select} ORDER BY 1", params)
    return np.fromiter((row[0] for row in rows), dtype=np.int64)


def hits(conn: sqlite3.Connection, scored: Sequence[tuple[int, float]]) -> list[Hit]:
    """Hits for ``(label, score)`` pairs, in their order."""
    rows: dict[int, tuple[str, str, str]] = {}
    for start in range(0, len(scored), CHUNK):
        chunk = [label for label, _ in scored[start : start + CHUNK]]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT label, id, text, metadata FROM documents WHERE label IN ({marks})"  # noqa: S608
        for label, *rest in conn.execute(sql, chunk):
            rows[label] = (rest[0], rest[1], rest[2])
    return [Hit(rows[label][0], rows[label][1], score, json.loads(rows[label][2]))
            for label, score in scored if label in rows]  # fmt: skip


def keyword_search(conn: sqlite3.Connection, collection_id: int, query: str, top_k: int,
                   flt: Filter | None) -> list[Hit]:  # fmt: skip
    match = fts_query(query)
    if match is None:
        return []
    where, params = "", list[Any]()
    if flt:
        select, params = filter_sql(collection_id, flt)
        where = f" AND d.label IN ({select})"
    sql = (
        "SELECT d.id, d.text, d.metadata, -bm25(documents_fts) AS score FROM documents_fts "  # noqa: S608
        "JOIN documents AS d ON d.label = documents_fts.rowid "
        f"WHERE documents_fts MATCH ? AND d.collection_id = ?{where} "
        "ORDER BY score DESC, d.id LIMIT ?"
    )
    rows = conn.execute(sql, (match, collection_id, *params, top_k))
    return [Hit(i, text, float(score), json.loads(meta)) for i, text, meta, score in rows]
