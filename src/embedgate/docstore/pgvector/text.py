"""Keyword queries for PostgreSQL full text: the user's text as a list of search terms.

The documents' ``tsvector`` uses the ``embedgate_search.fts`` configuration (pg_schema):
PostgreSQL's default parser with English Snowball stemming and no stop words, after every
CJK character (Han, kana, Hangul) is set apart by spaces, since the parser would read a
whole Chinese sentence as one word. A query is the OR of its terms, each matched as a
phrase by ``phraseto_tsquery``, which accepts any text: operators, quotes and parentheses
are punctuation, never syntax. A CJK run becomes its overlapping two-character phrases,
as in the embedded store (local_text), so both stores find the same documents.
"""

from __future__ import annotations

import re
from itertools import pairwise

CJK = (
    "\u3040-\u30ff"  # hiragana, katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs, extension A, compatibility
    "\uac00-\ud7af"  # Hangul syllables
    "\U00020000-\U0003134f"  # CJK extensions B to G
)
# The same class for PostgreSQL's regular expressions (the generated tsvector column).
CJK_SQL = (
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0003134f]"
)
MAX_TERMS = 64  # terms are ORed; bounding them bounds the cost of one search
_CJK_RUN = re.compile(f"[{CJK}]+")
_WORD = re.compile(r"\w")


def query_terms(query: str) -> list[str]:
    """The distinct terms of a query, at most MAX_TERMS; CJK runs as bigram phrases."""
    terms: list[str] = []
    for chunk in query.split():
        for term in _chunk_terms(chunk):
            if term not in terms:
                terms.append(term)
    return terms[:MAX_TERMS]


def _chunk_terms(chunk: str) -> list[str]:
    terms: list[str] = []
    start = 0
    for run in _CJK_RUN.finditer(chunk):
        terms.extend(_plain(chunk[start : run.start()]))
        text = run.group()
        terms.extend([text] if len(text) == 1 else [f"{a} {b}" for a, b in pairwise(text)])
        start = run.end()
    terms.extend(_plain(chunk[start:]))
    return terms


def _plain(text: str) -> list[str]:
    return [text] if _WORD.search(text) else []
