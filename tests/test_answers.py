"""Tests for mcl.metrics.answers."""

from __future__ import annotations

import pytest

from mcl.metrics.answers import (
    exact_match,
    extract_option_letter,
    match_answer,
    normalize_answer,
    option_match,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  The Cat ", "cat"),
        ("A dog.", "dog"),
        ("an apple, the pear!", "apple pear"),
        ("New-York\tCity", "newyork city"),
        ("Theater", "theater"),  # "the" inside a word is kept
        ("42 Apples", "42 apples"),
        ("", ""),
        ("?!", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match() -> None:
    assert exact_match("The Golden Retriever.", "golden retriever")
    assert not exact_match("golden retriever", "labrador retriever")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("b", "b"),
        ("B", "b"),
        ("(b)", "b"),
        ("b.", "b"),
        ("b)", "b"),
        ("option b", "b"),
        ("Option C: a red car", "c"),
        ("answer: c", "c"),
        ("The answer is (D).", "d"),
        ("a", "a"),
        ("(A) a cat", "a"),
        ("The answer is a", "a"),
        ("a dog, so b", "b"),  # unmarked "a" is the article; "b" wins
        ("a dog", "a"),  # only candidate: fall back to "a"
        ("cab", None),  # letters inside words do not count
        ("none of these", None),
        ("", None),
    ],
)
def test_extract_option_letter(text: str, expected: str | None) -> None:
    assert extract_option_letter(text) == expected


def test_extract_option_letter_custom_letters() -> None:
    assert extract_option_letter("(E)", letters="abcde") == "e"
    assert extract_option_letter("(E)") is None


def test_option_match() -> None:
    assert option_match("The answer is (B).", "b")
    assert option_match("b", "(B)")
    assert not option_match("c", "b")
    assert option_match("(e)", "E")  # the target letter is always a candidate
    with pytest.raises(ValueError, match="single letter"):
        option_match("b", "bc")


def test_match_answer_kinds() -> None:
    assert match_answer("The Eiffel Tower", "eiffel tower", "exact")
    assert match_answer("answer: d", "d", "option")
    assert not match_answer("answer: d", "a", "option")


def test_match_answer_unknown_kind() -> None:
    with pytest.raises(ValueError, match="exact, option"):
        match_answer("x", "x", "fuzzy")
