"""Matching generated answers against targets (free-form exact match or option letters)."""

from __future__ import annotations

import re

MATCH_KINDS: tuple[str, ...] = ("exact", "option")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NOT_KEPT = re.compile(r"[^a-z0-9 ]")
# A standalone "a" only counts as an option letter right away when it is marked as one, because
# otherwise it is usually the English article ("a cat").
_MARKED_PREFIX = re.compile(r"(\(|\boption\s*|\banswer\s*(?:is\s*)?:?\s*)$")
_MARKED_SUFFIX = re.compile(r"^(\)|[.:](?![a-z0-9]))")


def normalize_answer(text: str) -> str:
    """Normalise an answer: lowercase, drop punctuation and articles, collapse whitespace.

    Only ``a-z``, ``0-9`` and spaces are kept (other characters are deleted, whitespace of any
    kind becomes a space), the articles "a", "an", "the" are removed as whole words. This
    follows the SQuAD v1.1 evaluation script (Rajpurkar et al. 2016) and the similar answer
    processing of the VQA evaluation (Antol et al. 2015).
    """
    text = re.sub(r"\s", " ", text.lower().strip())
    text = _NOT_KEPT.sub("", text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, target: str) -> bool:
    """Return whether ``prediction`` equals ``target`` after :func:`normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(target)


def extract_option_letter(text: str, letters: str = "abcd") -> str | None:
    """Return the lowercase option letter a model answered with, or ``None``.

    Rule: a candidate is a single letter from ``letters`` standing alone as a word (not inside
    a word such as "cab"), so "b", "(B)", "b.", "b)", "option b", "answer: c" and
    "the answer is (d)" all yield a letter. The first candidate wins, except that a plain "a" is
    ambiguous with the article: it wins only when marked as an option ("(a)", "a)", "a.", "a:",
    "option a", "answer: a", or the whole answer is "a"); an unmarked "a" is used only if no
    other candidate follows.
    """
    lowered = text.lower()
    allowed = {ch for ch in letters.lower() if ch.isalpha()}
    if not allowed:
        return None
    pattern = re.compile(rf"(?<![a-z0-9])([{''.join(sorted(allowed))}])(?![a-z0-9])")
    fallback: str | None = None
    for match in pattern.finditer(lowered):
        letter = match.group(1)
        if letter != "a":
            return letter
        before = lowered[: match.start()]
        after = lowered[match.end() :]
        whole = not before.strip() and not after.strip(" .):")
        if whole or _MARKED_PREFIX.search(before) or _MARKED_SUFFIX.match(after):
            return letter
        if fallback is None:
            fallback = letter
    return fallback


def option_match(prediction: str, target_letter: str, letters: str = "abcd") -> bool:
    """Return whether the option letter extracted from ``prediction`` equals ``target_letter``.

    The target may be written as "B", "(b)" or "b."; it is reduced to its lowercase letter and
    added to ``letters`` so that targets beyond "d" can still be matched.

    Raises:
        ValueError: if ``target_letter`` is not a single letter once brackets/punctuation go.
    """
    target = re.sub(r"[^a-z]", "", target_letter.lower())
    if len(target) != 1:
        raise ValueError(f"target option must be a single letter, got {target_letter!r}")
    return extract_option_letter(prediction, letters + target) == target


def match_answer(prediction: str, target: str, kind: str) -> bool:
    """Score ``prediction`` against ``target`` with the matcher named by ``kind``.

    ``kind`` is "exact" (:func:`exact_match`) or "option" (:func:`option_match`).

    Raises:
        ValueError: if ``kind`` is not one of :data:`MATCH_KINDS`.
    """
    if kind == "exact":
        return exact_match(prediction, target)
    if kind == "option":
        return option_match(prediction, target)
    raise ValueError(f"unknown answer kind {kind!r}; valid kinds: {', '.join(MATCH_KINDS)}")
