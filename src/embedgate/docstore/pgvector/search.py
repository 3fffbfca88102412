"""How the pgvector store searches a collection's vectors: exactly in small collections,
through the per-dimension HNSW index (iterative scans) in large ones."""

from __future__ import annotations

from typing import Any, NamedTuple

from psycopg import sql

from embedgate.docstore.base import Hit
from embedgate.docstore.pgvector import queries as q
from embedgate.docstore.pgvector.index import index_type
from embedgate.docstore.pgvector.transactions import Connection, rows

# Up to these sizes an exact scan is about as fast as HNSW (~30 ms for 20k rows of 384
# dimensions) and always right; HNSW recall drops under selective filters, so filtered
# searches stay exact longer.
EXACT_MAX_DOCUMENTS, FILTERED_EXACT_MAX_DOCUMENTS = 20_000, 50_000
MIN_EF_SEARCH, MAX_EF_SEARCH = 100, 1000  # pgvector allows 1..1000
# An iterative scan's budget in index tuples. A tuple read through the index costs about
# 5x one read by an exact scan, so past a quarter of the collection exact is cheaper.
MIN_SCAN_TUPLES, MAX_SCAN_TUPLES = 10_000, 100_000


class Ref(NamedTuple):
    """A collection's row as its writes and searches need it."""

    id: int
    dimensions: int
    document_count: int


async def nearest(connection: Connection, ref: Ref, where: sql.Composable,
                  params: dict[str, Any], filtered: bool) -> list[Any]:  # fmt: skip
    """Top-k rows (id, text, metadata, score): approximate where that is complete, else
    exact."""
    found = await _approximate(connection, ref, where, params, filtered)
    return found if found is not None else await rows(connection, q.exact_search(where), params)


async def _approximate(
    connection: Connection, ref: Ref, where: sql.Composable, params: dict[str, Any],
    filtered: bool,
) -> list[Any] | None:  # fmt: skip
    """Top-k through the HNSW index, or None where an exact scan must answer: small
    collections, no index for the dimensions, or an iterative scan that ran out of budget
    before finding top_k matches (a selective filter), so that filtered top_k is complete."""
    kind = index_type(ref.dimensions)
    exact_max = FILTERED_EXACT_MAX_DOCUMENTS if filtered else EXACT_MAX_DOCUMENTS
    if kind is None or ref.document_count <= exact_max:
        return None
    top_k = int(params["top_k"])
    ef_search = min(MAX_EF_SEARCH, max(MIN_EF_SEARCH, 2 * top_k))
    budget = min(MAX_SCAN_TUPLES, max(MIN_SCAN_TUPLES, ref.document_count // 4))
    await connection.execute(q.HNSW_SETTINGS, [str(ef_search), str(budget)])
    found = await rows(connection, q.hnsw_search(ref.dimensions, kind, where), params)
    await connection.execute(q.PLANNER_DEFAULTS)
    return found if len(found) >= min(top_k, ref.document_count) else None


def hits(found: list[Any]) -> list[Hit]:
    return [Hit(doc_id, text, float(score), metadata) for doc_id, text, metadata, score in found]
