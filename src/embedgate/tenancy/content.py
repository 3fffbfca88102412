"""Text as blocked-term rules see it: one normal form for terms and inputs alike.

Tokenizers fold much of what tells two strings apart: the bundled model's lowercases,
strips accents (``se\u0301cret`` is ``secret`` to it) and drops zero-width and control
characters, so each of those variants embeds exactly like the blocked text. A rule that
compared raw strings would let every one of them through. So both sides are normalized:
case-folded, NFKD (fullwidth and other compatibility forms become their plain letters),
then combining marks, zero-width/format and control characters removed, NFKC, and runs of
whitespace made one space. See docs/policy.md.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Sequence

# Combining marks (enclosing ones too), format characters (zero-width space and joiners,
# soft hyphen, bidi controls, BOM) and control characters other than whitespace.
# Planes 4 to 13 are unassigned and 15 and 16 private use: only planes 0-3 and 14 (tags,
# variation selectors) are scanned.
STRIPPED_CATEGORIES = frozenset({"Mn", "Me", "Cf", "Cc"})
_SPACES = re.compile(r"\s{2,}|[^\S ]")  # runs of whitespace, and any but a space
_ASCII_CONTROLS = re.compile("[\x00-\x08\x0e-\x1b\x7f]+")  # \t\n\v\f\r, \x1c-\x1f: spaces


@functools.cache
def _stripped() -> dict[int, None]:
    """``str.translate`` table removing every such code point (some 2,200); built once, on
    first use (a pass over the assigned planes, about 0.1 s), not at import."""
    codes = itertools.chain(range(0x40000), range(0xE0000, 0xE1000))
    return {code: None for code in codes
            if unicodedata.category(chr(code)) in STRIPPED_CATEGORIES
            and not chr(code).isspace()}  # fmt: skip


def normalize(text: str) -> str:
    if text.isascii():  # the common case: only case and control characters to fold
        return _SPACES.sub(" ", _ASCII_CONTROLS.sub("", text.lower()))
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    kept = unicodedata.normalize("NFKC", decomposed.translate(_stripped()))
    return _SPACES.sub(" ", kept.casefold())


@functools.lru_cache(maxsize=1024)
def blocked_pattern(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    """The terms, normalized, as one pattern; cached per policy's terms. Substrings: works
    for scripts without word boundaries (Chinese, Japanese). None when no term is left."""
    normalized = sorted({normalize(term) for term in terms} - {"", " "})
    if not normalized:
        return None
    return re.compile("|".join(re.escape(term) for term in normalized))


def contains_blocked(terms: Sequence[str], texts: Sequence[str]) -> bool:
    pattern = blocked_pattern(tuple(terms))
    return pattern is not None and any(pattern.search(normalize(text)) for text in texts)
