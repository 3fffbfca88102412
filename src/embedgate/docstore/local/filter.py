"""Metadata filters over ``metadata_values``, the table of documents' top-level scalars.

``{"lang": "en", "year": {"$in": [2024, 2025]}}``: every key must hold; a value matches by
JSON type and value, so ``true`` never equals ``1`` and ``"1"`` never equals ``1`` (while
``1`` equals ``1.0``, as in JSON). Each ``(collection, key, value)`` is a B-tree seek in
that table's primary key, so a selective filter costs what it returns, not a scan of the
documents (whose rows hold the vectors). Keys and values are always bound parameters.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from embedgate.docstore.base import Filter

_INT64 = 2**63


class InvalidFilter(ValueError):
    """A filter that is not ``{key: scalar}`` or ``{key: {"$in": [scalars]}}``."""


def scalar(value: Any) -> tuple[str, Any] | None:
    """``(JSON type, value as stored)`` of a filterable value, None for others. null, true
    and false are stored as 0 (a primary key column cannot be NULL): the type tells."""
    if value is None or isinstance(value, bool):
        return ("null" if value is None else "true" if value else "false"), 0
    if isinstance(value, int):  # out of SQLite's range: compared as a float, like JSON
        return "integer", value if -_INT64 <= value < _INT64 else float(value)
    if isinstance(value, float):
        return ("real", value) if math.isfinite(value) else None
    if isinstance(value, str):
        return "text", value
    return None


def index_rows(label: int, collection_id: int, metadata: Mapping[str, Any]
               ) -> list[tuple[int, int, str, str, Any]]:  # fmt: skip
    """The ``metadata_values`` rows of one document."""
    rows = []
    for key, value in metadata.items():
        found = scalar(value)
        if found is not None:
            rows.append((collection_id, label, key, *found))
    return rows


def write_index(conn: sqlite3.Connection, label: int, collection_id: int,
                metadata: Mapping[str, Any]) -> None:  # fmt: skip
    conn.execute("DELETE FROM metadata_values WHERE label = ?", (label,))
    conn.executemany(
        "INSERT INTO metadata_values (collection_id, label, key, type, value) "
        "VALUES (?, ?, ?, ?, ?)",
        index_rows(label, collection_id, metadata),
    )


def filter_sql(collection_id: int, flt: Filter, among: Sequence[int] = ()
               ) -> tuple[str, list[Any]]:  # fmt: skip
    """A ``SELECT label`` of the collection's documents that match every condition (and
    are ``among`` these labels, if any are given)."""
    selects: list[str] = []
    params: list[Any] = []
    for key, condition in flt.items():
        if not isinstance(key, str):
            raise InvalidFilter("filter keys are metadata field names")
        union = [_select(collection_id, key, value, params, among)
                 for value in _values(condition)]  # fmt: skip
        selects.append(" UNION ".join(union) if union else "SELECT NULL WHERE 0")
    return " INTERSECT ".join(f"SELECT * FROM ({s})" for s in selects), params  # noqa: S608


def _select(collection_id: int, key: str, value: Any, params: list[Any],
            among: Sequence[int]) -> str:  # fmt: skip
    found = scalar(value)
    if found is None:
        raise InvalidFilter("filter values are JSON scalars: string, number, boolean or null")
    kind, stored = found
    numeric = kind in ("integer", "real")
    params.extend([collection_id, key, stored, *(["integer", "real"] if numeric else [kind])])
    types = "type IN (?, ?)" if numeric else "type = ?"
    labels = f" AND label IN ({','.join('?' * len(among))})" if among else ""
    params.extend(among)
    return (f"SELECT label FROM metadata_values WHERE collection_id = ? AND key = ? "  # noqa: S608
            f"AND value = ? AND {types}{labels}")  # fmt: skip


def _values(condition: Any) -> list[Any]:
    if isinstance(condition, Mapping):
        if set(condition) != {"$in"}:
            raise InvalidFilter('the only filter operator is "$in"')
        values = condition["$in"]
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise InvalidFilter('"$in" takes a list of values')
        return list(values)
    return [condition]
