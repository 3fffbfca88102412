"""Full-text preparation for SQLite FTS5: indexed bodies and safe MATCH expressions.

The FTS5 table uses ``porter unicode61 remove_diacritics 2``: words for English and other
space-separated scripts, with stemming. unicode61 alone would read a whole Chinese sentence
as one token, so every CJK character (Han, kana, Hangul) is written as a token of its own,
and a CJK query run becomes its overlapping two-character phrases ("北京大学" ->
"北 京" OR "京 大" OR "大 学"), the bigram matching of Lucene's CJK analyzer. The trigram
tokenizer would also match Chinese, but never a query word shorter than three characters
(most Chinese words have two) and without stemming, for an index about three times larger.
"""

from __future__ import annotations

import re
from itertools import pairwise

_CJK = (
    "\u3040-\u30ff"  # hiragana, katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs, extension A, compatibility
    "\uac00-\ud7af"  # Hangul syllables
    "\U00020000-\U0003134f"  # CJK extensions B to G
)
_CJK_CHAR = re.compile(f"[{_CJK}]")
_CJK_RUN = re.compile(f"[{_CJK}]+")
_WORD = re.compile(r"\w")
MAX_TERMS = 64  # a query's terms are ORed; bounding them bounds the cost of one search


def fts_body(text: str) -> str:
    """The text as the FTS table indexes it: each CJK character set apart by spaces."""
    return _CJK_CHAR.sub(lambda m: f" {m.group()} ", text)


def fts_query(query: str) -> str | None:
    """A MATCH expression that finds documents with any of the query's terms, or None.

    Every term is a double-quoted FTS5 string, so the user's text is never FTS5 syntax:
    quotes are doubled and operators (AND, OR, NOT, NEAR, *, -, ^, :, parentheses) are
    plain words or punctuation inside the string, split off by the tokenizer.
    """
    terms: list[str] = []
    for chunk in query.split():
        for term in _chunk_terms(chunk):
            if term not in terms:
                terms.append(term)
    if not terms:
        return None
    return " OR ".join(f'"{term.replace(chr(34), chr(34) * 2)}"' for term in terms[:MAX_TERMS])


def _chunk_terms(chunk: str) -> list[str]:
    terms: list[str] = []
    start = 0
    for run in _CJK_RUN.finditer(chunk):
        terms.extend(_plain(chunk[start : run.start()]))
        terms.extend(_bigrams(run.group()))
        start = run.end()
    terms.extend(_plain(chunk[start:]))
    return terms


def _plain(text: str) -> list[str]:
    return [text] if _WORD.search(text) else []


def _bigrams(run: str) -> list[str]:
    if len(run) == 1:
        return [run]
    return [f"{a} {b}" for a, b in pairwise(run)]
