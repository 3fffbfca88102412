"""The pgvector store's SQL: every statement it runs on data, and the metadata filters.

Values are always bound parameters. Scores are computed in full precision (``<#>`` is
the negative inner product, so the cosine of unit vectors is its negation); ties are
broken by id so results are stable. The dimension count is written into the HNSW query
as a literal, never a parameter: the planner matches the partial index (``WHERE
dimensions = 384``) and its expression (``embedding::vector(384)``) only against
constants, in custom and generic plans alike. Queries say ``tenant_id = %s`` although
row-level security already does: it lets the planner use the ``(tenant_id, ...)`` keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from embedgate.docstore.base import Filter

SCALARS = (str, int, float, bool, type(None))

# "role" is SET ROLE's setting: set_config lets both values be bound parameters.
BEGIN = "SELECT set_config('role', %s, true), set_config('embedgate.tenant', %s, true)"

# A collection is looked up by its name until a handle is bound to it, then by its id
# (GENERATED ALWAYS AS IDENTITY: never reused): these statements end with one of the two.
BY_NAME, BY_ID = " AND name = %s", " AND id = %s"
COLLECTION = """SELECT id, name, model, dimensions, metadata, created_at, document_count
FROM embedgate_search.collections WHERE tenant_id = %s"""
COLLECTIONS = """SELECT name, model, dimensions, metadata, created_at, document_count
FROM embedgate_search.collections WHERE tenant_id = %s ORDER BY name"""
REF = """SELECT id, dimensions, document_count FROM embedgate_search.collections
WHERE tenant_id = %s"""
# After REF: serializes the writers of one collection, so document_count stays exact.
FOR_UPDATE = " FOR UPDATE"
CREATE_COLLECTION = """INSERT INTO embedgate_search.collections
(tenant_id, name, model, dimensions, metadata, created_at) VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant_id, name) DO NOTHING RETURNING id"""
# The documents go with them: ON DELETE CASCADE. A collection's delete ends with
# RETURNING_ID after BY_NAME or BY_ID; the tenant's is the statement alone.
DELETE_COLLECTIONS = "DELETE FROM embedgate_search.collections WHERE tenant_id = %s"
RETURNING_ID = " RETURNING id"
ADD_COUNT = """UPDATE embedgate_search.collections SET document_count = document_count + %s
WHERE id = %s"""

IN_COLLECTION = "FROM embedgate_search.documents d WHERE d.collection_id = %s AND d.tenant_id = %s"
TEXT_HASHES = "SELECT d.id, d.text_hash " + IN_COLLECTION + " AND d.id = ANY(%s)"
DOCUMENT = "SELECT d.id, d.text, d.metadata " + IN_COLLECTION + " AND d.id = %s"
VECTOR = "SELECT d.embedding " + IN_COLLECTION + " AND d.id = %s"
PAGE = (
    "SELECT d.id, d.text, d.metadata " + IN_COLLECTION
    + " AND (%s::text IS NULL OR d.id > %s) ORDER BY d.id LIMIT %s"
)  # fmt: skip
EXPORT = (
    "SELECT d.id, d.text, d.metadata, d.text_hash, d.embedding " + IN_COLLECTION
    + " AND (%s::text IS NULL OR d.id > %s) ORDER BY d.id LIMIT %s"
)  # fmt: skip
EXISTING = """SELECT count(*) FROM embedgate_search.documents
WHERE collection_id = %s AND id = ANY(%s)"""
UPSERT = """INSERT INTO embedgate_search.documents
(collection_id, id, tenant_id, dimensions, text, text_hash, metadata, embedding)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (collection_id, id) DO UPDATE SET text = excluded.text,
    text_hash = excluded.text_hash, metadata = excluded.metadata, embedding = excluded.embedding"""
SET_METADATA = """UPDATE embedgate_search.documents SET metadata = %s
WHERE collection_id = %s AND id = %s"""
DELETE_DOCUMENT = "DELETE FROM embedgate_search.documents WHERE collection_id = %s AND id = %s"

# Storage caps (base.Usage): the counts come from the collection rows; the bytes read the
# tenant's documents (through the primary key, collection by collection). The advisory
# lock serializes a tenant's capped writes on every replica, so a cap is never crossed.
CAPPED_WRITE = """SELECT pg_advisory_xact_lock(hashtextextended('embedgate-caps:' || %s, 0))"""
USAGE = """SELECT count(*), coalesce(sum(document_count), 0)::bigint,
    coalesce(sum(octet_length(metadata::text)), 0)::bigint
FROM embedgate_search.collections WHERE tenant_id = %s"""
DOCUMENT_BYTES = """SELECT coalesce(sum(octet_length(d.text) + octet_length(d.metadata::text)
    + 4 * d.dimensions), 0)::bigint
FROM embedgate_search.documents d JOIN embedgate_search.collections c
ON c.id = d.collection_id WHERE c.tenant_id = %s"""

# The planner cannot estimate a JSONB filter's selectivity and would at times choose a
# sequential scan over the approximate one it was asked for; the exact path is separate.
HNSW_SETTINGS = """SELECT set_config('hnsw.ef_search', %s, true),
    set_config('hnsw.iterative_scan', 'relaxed_order', true),
    set_config('hnsw.max_scan_tuples', %s, true),
    set_config('enable_seqscan', 'off', true), set_config('enable_sort', 'off', true)"""
PLANNER_DEFAULTS = """SELECT set_config('enable_seqscan', 'on', true),
    set_config('enable_sort', 'on', true)"""

EXACT = """
SELECT d.id, d.text, d.metadata, -(d.embedding <#> %(query)s) AS score
FROM embedgate_search.documents d
WHERE d.collection_id = %(collection)s AND d.tenant_id = %(tenant)s {where}
ORDER BY score DESC, d.id
LIMIT %(top_k)s
"""

# MATERIALIZED + the outer ORDER BY: an iterative scan in relaxed order may return rows
# slightly out of order (pgvector's documented pattern).
HNSW = """
WITH nearest AS MATERIALIZED (
    SELECT d.id, d.text, d.metadata, -(d.embedding <#> %(query)s) AS score
    FROM embedgate_search.documents d
    WHERE d.collection_id = %(collection)s AND d.tenant_id = %(tenant)s
        AND d.dimensions = {dims} {where}
    ORDER BY d.embedding::{kind}({dims}) <#> %(query)s::{kind}({dims})
    LIMIT %(top_k)s
)
SELECT id, text, metadata, score FROM nearest ORDER BY score DESC, id
"""

# The query's terms as tsqueries, and their OR; terms without lexemes (punctuation) are
# left out, as `@@` on an empty query warns on every row.
TSQUERIES = """
SELECT embedgate_search.tsquery_any(query) FILTER (WHERE numnode(query) > 0)::text,
    array_agg(query::text ORDER BY n) FILTER (WHERE numnode(query) > 0)
FROM (
    SELECT n, phraseto_tsquery('embedgate_search.fts', term) AS query
    FROM unnest(%s::text[]) WITH ORDINALITY AS t(term, n)
) AS terms
"""

# A document's score is the number of query terms it contains, plus its cover density
# (0 to 1) for the order among those with as many: PostgreSQL has no BM25. The tsqueries
# are constants for the planner (no prepared statement), so it estimates how many
# documents match and picks the GIN index when few do.
KEYWORD = """
SELECT d.id, d.text, d.metadata, {matches} + ts_rank_cd(d.tsv, %(any)s::tsquery, 32) AS score
FROM embedgate_search.documents d
WHERE d.collection_id = %(collection)s AND d.tenant_id = %(tenant)s
    AND d.tsv @@ %(any)s::tsquery {where}
ORDER BY score DESC, d.id
LIMIT %(top_k)s
"""
MATCHES = "(d.tsv @@ {}::tsquery)::int"


def exact_search(where: sql.Composable) -> sql.Composed:
    return sql.SQL(EXACT).format(where=where)


def hnsw_search(dimensions: int, kind: str, where: sql.Composable) -> sql.Composed:
    return sql.SQL(HNSW).format(where=where, dims=sql.Literal(dimensions), kind=sql.SQL(kind))


def keyword_search(terms: int, where: sql.Composable) -> sql.Composed:
    """Parameters ``term_0``..: sums inline, not a subquery per row (twice as fast when
    most documents match)."""
    matches = sql.SQL(" + ").join(
        sql.SQL(MATCHES).format(sql.Placeholder(f"term_{n}")) for n in range(terms)
    )
    return sql.SQL(KEYWORD).format(where=where, matches=matches)


def metadata_filter(filter: Filter | None) -> tuple[sql.Composable, dict[str, Any]]:
    """``AND`` conditions on ``d.metadata`` and their parameters. JSON equality: 1 equals
    1.0, ``true`` is not 1, a missing key matches nothing (not even ``None``)."""
    conditions: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for number, (field, condition) in enumerate((filter or {}).items()):
        key, value = f"filter_key_{number}", f"filter_value_{number}"
        params[key] = str(field)
        if isinstance(condition, Mapping):
            params[value] = [Jsonb(item) for item in _in_values(field, condition)]
            template = "AND d.metadata -> {}::text = ANY({}::jsonb[])"
        else:
            params[value] = Jsonb(_scalar(field, condition))
            template = "AND d.metadata -> {}::text = {}::jsonb"
        conditions.append(sql.SQL(template).format(sql.Placeholder(key), sql.Placeholder(value)))
    return sql.SQL(" ").join(conditions), params


def _in_values(field: str, condition: Mapping[str, Any]) -> list[Any]:
    values = condition.get("$in")
    if set(condition) != {"$in"} or not isinstance(values, list | tuple):
        raise ValueError(f"filter.{field}: the only operator is `$in`, with a list")
    return [_scalar(field, item) for item in values]


def _scalar(field: str, value: Any) -> Any:
    if not isinstance(value, SCALARS):
        raise ValueError(f"filter.{field}: values are JSON scalars")
    return value
