"""Blocked-term matching on normalized text: every spelling that embeds the same matches."""

from __future__ import annotations

import pytest

from embedgate.tenancy.content import blocked_pattern, contains_blocked, normalize


@pytest.mark.parametrize(
    "spelling",
    [
        "secret", "SECRET", "Secret", "se\u0301cret", "s\u200decret", "s\u200becret",
        "s\u200cecret", "se\u00adcret", "s\ufeffecret", "\uff53\uff45\uff43\uff52\uff45\uff54",
        "se\x01cret", "sec\u20dbret", "s\u2060ecret", "s\U000e0041ecret",
    ],
)  # fmt: skip
def test_every_spelling_that_embeds_the_same_normalizes_the_same(spelling: str) -> None:
    assert normalize(spelling) == "secret"


def test_whitespace_runs_and_other_spaces_are_one_space() -> None:
    assert normalize("Project\u00a0\t  Falcon\n") == "project falcon "
    assert contains_blocked(["Project  Falcon"], ["about project\u3000falcon"])


def test_terms_are_normalized_like_inputs_and_matched_as_substrings() -> None:
    assert contains_blocked(["Se\u0301cret"], ["top-secret-plan"])
    assert contains_blocked(["机密"], ["这是机密文件"])
    assert contains_blocked(["straße"], ["STRASSE"])  # full case folding
    assert not contains_blocked(["secret"], ["the quarterly plan", "secre t"])


def test_terms_that_normalize_to_nothing_block_nothing() -> None:
    assert blocked_pattern(("\u200b", "", "\u0301")) is None
    assert not contains_blocked(["\u200b"], ["anything at all"])


def test_the_pattern_is_cached_per_term_list() -> None:
    assert blocked_pattern(("a", "b")) is blocked_pattern(("a", "b"))
